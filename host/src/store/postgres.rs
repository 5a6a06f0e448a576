//! The store in PostgreSQL, for hosts whose outbox is PostgreSQL: every
//! replica sees the same buckets. Tables `optech_kv`, `optech_kv_buckets` and
//! `optech_kv_owners` (`migrations/postgres/0002_store.sql`), versioned with
//! the outbox's by the same migrator.
//!
//! Each call is one transaction, and every one that writes takes its
//! bucket's counter row first (`FOR UPDATE`): writes to a bucket, from any
//! replica, run one after another, so each reads what the last one committed
//! and no update is lost. The counters change in the same transaction as the
//! rows they count, so a limit is checked without a scan. Locks are taken in
//! one order (a bucket's row, its keys, then plugins' rows in byte order), so
//! two calls never wait on each other in a cycle.
//!
//! Expiry is judged by the caller's clock (`now`), as with every backend; the
//! database's clock is never asked. The background prune runs on one replica
//! at a time (an advisory lock); the others skip their turn.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::OnceCell;

use super::{
    Backend, Row, Standing, StoreError, Usage, Write, add, admit, footprint, millis, signed,
    stored_integer, unavailable,
};
use crate::config::redact_url;
use crate::migrations::migrator;

/// Connections per replica.
const MAX_CONNECTIONS: u32 = 16;
/// How long a call waits for a connection: a database that is down fails a
/// plugin's call in this time rather than holding the request.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Expired keys deleted per transaction when pruning, so a prune never holds
/// a bucket's lock for long.
const PRUNE_BATCH: i64 = 1_000;
/// Serialises the background prune across replicas (`pg_try_advisory_lock`):
/// while one replica searches for expired keys, the others skip the search.
const PRUNE_LOCK: i64 = 0x006f_7074_6563_6802;

/// The PostgreSQL store; one per replica, all sharing the database.
pub struct PostgresBackend {
    options: PgConnectOptions,
    /// Built, and the schema migrated, on the first call: a host starts
    /// without the database, and a call retries after a failed start.
    pool: OnceCell<PgPool>,
}

impl PostgresBackend {
    /// The store at `url` (the outbox's); nothing is connected yet. Refuses
    /// only a URL that cannot be used, naming it without its password.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let options = url.parse::<PgConnectOptions>().map_err(|e| {
            StoreError::Unavailable(format!("{} is not a usable URL: {e}", redact_url(url)))
        })?;
        Ok(Self {
            options,
            pool: OnceCell::new(),
        })
    }

    /// The pool, with the schema migrated.
    async fn pool(&self) -> Result<&PgPool, StoreError> {
        self.pool
            .get_or_try_init(|| async {
                let pool = PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(self.options.clone());
                // Connected first, so a database that is down is named as such.
                drop(
                    pool.acquire()
                        .await
                        .map_err(|e| unavailable(format!("connecting to the database: {e}")))?,
                );
                migrator()
                    .run(&pool)
                    .await
                    .map_err(|e| unavailable(format!("migrating the store's tables: {e}")))?;
                Ok(pool)
            })
            .await
    }

    /// Runs `f` in one transaction, committing if it returns `Ok`; otherwise
    /// rolling back at once, so its locks go with it and nothing it wrote stays.
    async fn with_tx<T, E: From<StoreError>>(
        &self,
        f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut tx: Transaction<'static, Postgres> =
            self.pool().await?.begin().await.map_err(db)?;
        match f(&mut tx).await {
            Ok(out) => {
                tx.commit().await.map_err(db)?;
                Ok(out)
            }
            Err(e) => {
                // The call's own error is the one to report; a connection too
                // broken to roll back fails the pool's check before reuse.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Sets, increments or swaps: if a limit refuses it, prunes what has
    /// expired (expired keys count until pruned) and tries once more.
    async fn change(&self, w: &Write<'_>, change: &Change<'_>) -> Result<Done, StoreError> {
        let refused = match self.with_tx(async |c| attempt(c, w, change).await).await {
            Ok(done) => return Ok(done),
            Err(Refusal::Other(e)) => return Err(e),
            Err(Refusal::Limit(refused)) => refused,
        };
        let now = millis(w.now);
        match refused {
            // Only the bucket's own keys can make room in it.
            StoreError::TooManyKeys { .. } => self.prune_bucket(w.bucket, now).await?,
            _ => self.prune_all(now).await?,
        };
        match self.with_tx(async |c| attempt(c, w, change).await).await {
            Ok(done) => Ok(done),
            Err(Refusal::Other(e)) => Err(e),
            Err(Refusal::Limit(_)) => Err(refused),
        }
    }

    async fn prune_all(&self, now: i64) -> Result<u64, StoreError> {
        let buckets: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT bucket FROM optech_kv WHERE expires IS NOT NULL AND expires <= $1",
        )
        .bind(now)
        .fetch_all(self.pool().await?)
        .await
        .map_err(db)?;
        let mut total = 0;
        for bucket in &buckets {
            total += self.prune_bucket(bucket, now).await?;
        }
        Ok(total)
    }

    /// Deletes the bucket's keys expired by `now`, a batch per transaction.
    async fn prune_bucket(&self, bucket: &str, now: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self
                .with_tx(async |c| prune_batch(c, bucket, now).await)
                .await?;
            total += deleted;
            if deleted < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

/// A database error, as the plugin is told it. sqlx's messages never hold the
/// connection URL.
fn db(e: sqlx::Error) -> StoreError {
    unavailable(e)
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A write, as a transaction may have to run it twice (after a prune).
enum Change<'a> {
    Set {
        value: &'a [u8],
        expires: Option<SystemTime>,
    },
    Increment(i64),
    Swap {
        expected: Option<&'a [u8]>,
        value: &'a [u8],
        expires: Option<SystemTime>,
    },
}

/// What a write did: whether it wrote (a swap may not), and an increment's sum.
#[derive(Default)]
struct Done {
    wrote: bool,
    sum: i64,
}

/// Why a write did not happen: a limit (which pruning may lift) or anything else.
enum Refusal {
    Limit(StoreError),
    Other(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Self::Other(e)
    }
}

/// Locks the bucket's counter row until the transaction ends and returns its
/// key count; creates it (at zero) if `create`, else `None` if there is none.
/// Every write to the bucket takes this lock first.
async fn lock_bucket(
    c: &mut PgConnection,
    bucket: &str,
    create: bool,
) -> Result<Option<u64>, StoreError> {
    lock_counter(
        c,
        "SELECT keys FROM optech_kv_buckets WHERE bucket = $1 FOR UPDATE",
        create.then_some(
            "INSERT INTO optech_kv_buckets (bucket, keys, bytes) VALUES ($1, 0, 0)
             ON CONFLICT (bucket) DO NOTHING",
        ),
        bucket,
    )
    .await
}

/// Locks (creating it at zero) a plugin's counter row; returns the bytes it holds.
async fn lock_owner(c: &mut PgConnection, owner: &str) -> Result<u64, StoreError> {
    lock_counter(
        c,
        "SELECT bytes FROM optech_kv_owners WHERE owner = $1 FOR UPDATE",
        Some(
            "INSERT INTO optech_kv_owners (owner, bytes) VALUES ($1, 0)
             ON CONFLICT (owner) DO NOTHING",
        ),
        owner,
    )
    .await
    .map(Option::unwrap_or_default)
}

/// `SELECT ... FOR UPDATE` of one counter row; if it is missing and `create`
/// is given, inserts it and locks it.
async fn lock_counter(
    c: &mut PgConnection,
    lock: &'static str,
    create: Option<&'static str>,
    name: &str,
) -> Result<Option<u64>, StoreError> {
    let found: Option<i64> = sqlx::query_scalar(lock)
        .bind(name)
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
    let (None, Some(create)) = (found, create) else {
        return Ok(found.map(unsigned));
    };
    // A row another transaction is creating is waited for, then locked.
    sqlx::query(create)
        .bind(name)
        .execute(&mut *c)
        .await
        .map_err(db)?;
    let created: i64 = sqlx::query_scalar(lock)
        .bind(name)
        .fetch_one(&mut *c)
        .await
        .map_err(db)?;
    Ok(Some(unsigned(created)))
}

async fn count(
    c: &mut PgConnection,
    bucket: &str,
    keys: i64,
    bytes: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE optech_kv_buckets SET keys = keys + $2, bytes = bytes + $3 WHERE bucket = $1",
    )
    .bind(bucket)
    .bind(keys)
    .bind(bytes)
    .execute(c)
    .await
    .map_err(db)?;
    Ok(())
}

/// Changes plugins' byte counts, in byte order of their names (the lock order).
async fn charge(c: &mut PgConnection, deltas: BTreeMap<&str, i64>) -> Result<(), StoreError> {
    for (owner, bytes) in deltas.into_iter().filter(|(_, bytes)| *bytes != 0) {
        sqlx::query("UPDATE optech_kv_owners SET bytes = bytes + $2 WHERE owner = $1")
            .bind(owner)
            .bind(bytes)
            .execute(&mut *c)
            .await
            .map_err(db)?;
    }
    Ok(())
}

async fn read(c: &mut PgConnection, bucket: &str, key: &str) -> Result<Option<Row>, StoreError> {
    let row: Option<(Vec<u8>, String, Option<i64>)> = sqlx::query_as(
        "SELECT value, owner, expires FROM optech_kv WHERE bucket = $1 AND key = $2 FOR UPDATE",
    )
    .bind(bucket)
    .bind(key.as_bytes())
    .fetch_optional(c)
    .await
    .map_err(db)?;
    Ok(row.map(|(value, owner, expires)| Row {
        value,
        owner,
        expires,
    }))
}

/// One try at a set, increment or swap, inside its transaction.
async fn attempt(
    c: &mut PgConnection,
    w: &Write<'_>,
    change: &Change<'_>,
) -> Result<Done, Refusal> {
    let now = millis(w.now);
    let bucket_keys = lock_bucket(c, w.bucket, true).await?.unwrap_or_default();
    let old = read(c, w.bucket, w.key).await?;
    let live = old.as_ref().filter(|row| row.live(now));
    let (value, expires, sum) = match *change {
        Change::Set { value, expires } => (Cow::Borrowed(value), expires.map(millis), 0),
        Change::Increment(by) => {
            let current = stored_integer(w.key, live.map(|row| row.value.as_slice()))?;
            let sum = add(w.key, current, by)?;
            let expires = live.and_then(|row| row.expires);
            (Cow::Owned(sum.to_string().into_bytes()), expires, sum)
        }
        Change::Swap {
            expected,
            value,
            expires,
        } => {
            if live.map(|row| row.value.as_slice()) != expected {
                return Ok(Done::default());
            }
            (Cow::Borrowed(value), expires.map(millis), 0)
        }
    };
    put(c, w, &value, expires, old, bucket_keys).await?;
    Ok(Done { wrote: true, sum })
}

/// Writes the key under its bucket's lock, if the limits admit it, and moves
/// the counts: the writer pays for the new bytes, the old writer gets its back.
async fn put(
    c: &mut PgConnection,
    w: &Write<'_>,
    value: &[u8],
    expires: Option<i64>,
    old: Option<Row>,
    bucket_keys: u64,
) -> Result<(), Refusal> {
    let mut owners = vec![w.owner];
    owners.extend(old.as_ref().map(|o| o.owner.as_str()));
    owners.sort_unstable();
    owners.dedup();
    let mut held = 0;
    for owner in owners {
        let bytes = lock_owner(c, owner).await?;
        if owner == w.owner {
            held = bytes;
        }
    }
    let standing = Standing {
        existing: old
            .as_ref()
            .map(|o| (o.owner.as_str(), footprint(w.key, &o.value))),
        bucket_keys,
        held,
    };
    admit(w, value, standing).map_err(Refusal::Limit)?;
    sqlx::query(
        "INSERT INTO optech_kv (bucket, key, value, owner, expires) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (bucket, key) DO UPDATE SET
             value = excluded.value, owner = excluded.owner, expires = excluded.expires",
    )
    .bind(w.bucket)
    .bind(w.key.as_bytes())
    .bind(value)
    .bind(w.owner)
    .bind(expires)
    .execute(&mut *c)
    .await
    .map_err(db)?;
    let new = signed(footprint(w.key, value));
    let mut deltas = BTreeMap::from([(w.owner, new)]);
    match &old {
        Some(old) => {
            let gone = signed(footprint(w.key, &old.value));
            *deltas.entry(old.owner.as_str()).or_default() -= gone;
            count(c, w.bucket, 0, new - gone).await?;
        }
        None => count(c, w.bucket, 1, new).await?,
    }
    charge(c, deltas).await?;
    Ok(())
}

/// Deletes a key and gives its bytes back; says whether it was live.
async fn remove(c: &mut PgConnection, w: &Write<'_>) -> Result<bool, StoreError> {
    // No bucket row: the bucket has never held a key.
    if lock_bucket(c, w.bucket, false).await?.is_none() {
        return Ok(false);
    }
    let gone: Option<(String, i64, Option<i64>)> = sqlx::query_as(
        "DELETE FROM optech_kv WHERE bucket = $1 AND key = $2
         RETURNING owner, (octet_length(key) + octet_length(value))::bigint, expires",
    )
    .bind(w.bucket)
    .bind(w.key.as_bytes())
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    let Some((owner, bytes, expires)) = gone else {
        return Ok(false);
    };
    count(c, w.bucket, -1, -bytes).await?;
    charge(c, BTreeMap::from([(owner.as_str(), -bytes)])).await?;
    Ok(expires.is_none_or(|t| t > millis(w.now)))
}

/// Deletes up to a batch of the bucket's expired keys and their counts.
async fn prune_batch(c: &mut PgConnection, bucket: &str, now: i64) -> Result<u64, StoreError> {
    if lock_bucket(c, bucket, false).await?.is_none() {
        return Ok(0);
    }
    let gone: Vec<(String, i64)> = sqlx::query_as(
        "DELETE FROM optech_kv WHERE bucket = $1 AND expires <= $2 AND key IN (
           SELECT key FROM optech_kv
           WHERE bucket = $1 AND expires IS NOT NULL AND expires <= $2 LIMIT $3)
         RETURNING owner, (octet_length(key) + octet_length(value))::bigint",
    )
    .bind(bucket)
    .bind(now)
    .bind(PRUNE_BATCH)
    .fetch_all(&mut *c)
    .await
    .map_err(db)?;
    if gone.is_empty() {
        return Ok(0);
    }
    let mut deltas = BTreeMap::new();
    for (owner, bytes) in &gone {
        *deltas.entry(owner.as_str()).or_default() -= bytes;
    }
    let bytes: i64 = gone.iter().map(|(_, bytes)| bytes).sum();
    count(c, bucket, -signed(gone.len() as u64), -bytes).await?;
    charge(c, deltas).await?;
    Ok(gone.len() as u64)
}

/// The end of the byte range of keys that start with `prefix`: the least
/// bytes above all of them. Keys are UTF-8, which never holds 0xFF, so
/// `[0xFF]` is above every key (the end for the empty prefix).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF]
}

#[async_trait::async_trait]
impl Backend for PostgresBackend {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar(
            "SELECT value FROM optech_kv
             WHERE bucket = $1 AND key = $2 AND (expires IS NULL OR expires > $3)",
        )
        .bind(bucket)
        .bind(key.as_bytes())
        .bind(millis(now))
        .fetch_optional(self.pool().await?)
        .await
        .map_err(db)
    }

    async fn set(
        &self,
        write: Write<'_>,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        self.change(&write, &Change::Set { value, expires })
            .await
            .map(|_| ())
    }

    async fn delete(&self, write: Write<'_>) -> Result<bool, StoreError> {
        self.with_tx(async |c| remove(c, &write).await).await
    }

    async fn increment(&self, write: Write<'_>, by: i64) -> Result<i64, StoreError> {
        Ok(self.change(&write, &Change::Increment(by)).await?.sum)
    }

    async fn compare_and_swap(
        &self,
        write: Write<'_>,
        expected: Option<&[u8]>,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<bool, StoreError> {
        let change = Change::Swap {
            expected,
            value,
            expires,
        };
        Ok(self.change(&write, &change).await?.wrote)
    }

    async fn keys(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        // A prefix is a range of bytes, so `%` and `_` are only bytes, and
        // the range's ends are the index's bounds.
        let (sql, start) = match after {
            Some(after) if after >= prefix => (
                "SELECT key FROM optech_kv
                 WHERE bucket = $1 AND key > $2 AND key < $3 AND (expires IS NULL OR expires > $4)
                 ORDER BY key LIMIT $5",
                after,
            ),
            _ => (
                "SELECT key FROM optech_kv
                 WHERE bucket = $1 AND key >= $2 AND key < $3 AND (expires IS NULL OR expires > $4)
                 ORDER BY key LIMIT $5",
                prefix,
            ),
        };
        let keys: Vec<Vec<u8>> = sqlx::query_scalar(sql)
            .bind(bucket)
            .bind(start.as_bytes())
            .bind(range_end(prefix.as_bytes()))
            .bind(millis(now))
            .bind(signed(limit as u64))
            .fetch_all(self.pool().await?)
            .await
            .map_err(db)?;
        Ok(keys
            .into_iter()
            .map(|key| String::from_utf8_lossy(&key).into_owned())
            .collect())
    }

    async fn usage(&self, bucket: &str) -> Result<Usage, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT keys, bytes FROM optech_kv_buckets WHERE bucket = $1")
                .bind(bucket)
                .fetch_optional(self.pool().await?)
                .await
                .map_err(db)?;
        let (keys, bytes) = row.unwrap_or_default();
        Ok(Usage {
            keys: unsigned(keys),
            bytes: unsigned(bytes),
        })
    }

    /// The background prune, one replica at a time. (A write refused by a
    /// limit prunes without the lock: it needs the room now.)
    async fn prune(&self, now: SystemTime) -> Result<u64, StoreError> {
        let mut holder = self.pool().await?.acquire().await.map_err(db)?;
        // The lock lives as long as the session: a prune cut short (the host
        // stopping) closes the connection, which releases it, rather than
        // pooling a connection that still holds it.
        holder.close_on_drop();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(PRUNE_LOCK)
            .fetch_one(&mut *holder)
            .await
            .map_err(db)?;
        if !locked {
            return Ok(0);
        }
        let pruned = self.prune_all(millis(now)).await;
        // Released now rather than when the server sees the connection close
        // (which it does anyway if this fails).
        if let Err(e) = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PRUNE_LOCK)
            .execute(&mut *holder)
            .await
        {
            tracing::warn!("store: releasing the prune lock: {}", db(e));
        }
        pruned
    }
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("host", &self.options.get_host())
            .field("database", &self.options.get_database())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use sqlx::Connection as _;

    use super::*;
    use crate::store::Limits;

    /// A fresh database of the test's own on the PostgreSQL that
    /// `OPTECH_TEST_POSTGRES` names (`eval "$(.ci/postgres)"` starts one), as
    /// `tests/common` makes them. Without one the test is skipped, with a
    /// message, except in CI (`OPTECH_REQUIRE_POSTGRES`), where that fails.
    async fn fresh_database() -> Option<String> {
        let Ok(base) = std::env::var("OPTECH_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("OPTECH_REQUIRE_POSTGRES").is_none(),
                "OPTECH_TEST_POSTGRES is not set, and CI requires the PostgreSQL tests"
            );
            eprintln!(
                "skipped: set OPTECH_TEST_POSTGRES=postgres://... (`.ci/postgres` starts a throw-away server) to run the PostgreSQL tests"
            );
            return None;
        };
        let name = format!("optech_test_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("connecting to OPTECH_TEST_POSTGRES: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("creating a test database");
        let mut url = url::Url::parse(&base).expect("OPTECH_TEST_POSTGRES is a URL");
        url.set_path(&format!("/{name}"));
        Some(url.to_string())
    }

    #[tokio::test]
    async fn one_replica_prunes_at_a_time() {
        let Some(url) = fresh_database().await else {
            return;
        };
        let (a, b) = (
            PostgresBackend::new(&url).unwrap(),
            PostgresBackend::new(&url).unwrap(),
        );
        let limits = Limits::default();
        let then = SystemTime::now();
        let later = then + Duration::from_secs(1);
        // A key written `then` that has expired by `later`.
        let expiring = async |b: &PostgresBackend, key: &str| {
            let expires = Some(then + Duration::from_millis(10));
            let w = write(&limits, "p", key, then);
            b.set(w, b"v", expires).await.unwrap();
        };
        for key in ["k1", "k2", "k3"] {
            expiring(&a, key).await;
        }
        // Another replica is pruning: this one skips its turn.
        let mut other = PgConnection::connect(&url).await.unwrap();
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(PRUNE_LOCK)
            .fetch_one(&mut other)
            .await
            .unwrap();
        assert!(held);
        assert_eq!(b.prune(later).await.unwrap(), 0);
        assert_eq!(b.usage("race").await.unwrap().keys, 3);
        // A write that needs room does not wait for it.
        let tight = Limits {
            max_keys_per_bucket: 3,
            ..Limits::default()
        };
        b.set(write(&tight, "p", "k4", later), b"v", None)
            .await
            .unwrap();
        assert_eq!(b.usage("race").await.unwrap().keys, 1);
        expiring(&a, "k5").await;
        // The other replica is done: the next turn prunes, and releases the
        // lock after (the other replica's turn prunes again).
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PRUNE_LOCK)
            .execute(&mut other)
            .await
            .unwrap();
        assert_eq!(b.prune(later).await.unwrap(), 1);
        expiring(&a, "k6").await;
        assert_eq!(a.prune(later).await.unwrap(), 1);
        assert_counts_exact(&url).await;
    }

    /// The counter tables against a count of the rows themselves.
    async fn assert_counts_exact(url: &str) {
        let pool = PgPool::connect(url).await.unwrap();
        let kept: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT bucket, keys, bytes FROM optech_kv_buckets
             WHERE keys <> 0 OR bytes <> 0 ORDER BY bucket",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let counted: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT bucket, count(*), sum(octet_length(key) + octet_length(value))::bigint
             FROM optech_kv GROUP BY bucket ORDER BY bucket",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(kept, counted, "buckets' counts");
        let kept: Vec<(String, i64)> = sqlx::query_as(
            "SELECT owner, bytes FROM optech_kv_owners WHERE bytes <> 0 ORDER BY owner",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let counted: Vec<(String, i64)> = sqlx::query_as(
            "SELECT owner, sum(octet_length(key) + octet_length(value))::bigint
             FROM optech_kv GROUP BY owner ORDER BY owner",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(kept, counted, "plugins' bytes");
    }

    fn write<'a>(limits: &'a Limits, owner: &'a str, key: &'a str, now: SystemTime) -> Write<'a> {
        Write {
            owner,
            bucket: "race",
            key,
            limits,
            now,
        }
    }

    #[tokio::test]
    async fn the_postgres_backend_keeps_the_store_invariants() {
        let Some(url) = fresh_database().await else {
            return;
        };
        crate::store::conformance::run(&PostgresBackend::new(&url).unwrap()).await;
        assert_counts_exact(&url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_increments_and_swaps_are_atomic() {
        let Some(url) = fresh_database().await else {
            return;
        };
        let backend = Arc::new(PostgresBackend::new(&url).unwrap());
        crate::store::conformance::races(backend).await;
        assert_counts_exact(&url).await;
    }

    /// Two pools are two replicas: their increments of one key, all at once,
    /// each see their own sum, and the key is counted once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_replicas_count_every_increment() {
        let Some(url) = fresh_database().await else {
            return;
        };
        let replicas = [
            Arc::new(PostgresBackend::new(&url).unwrap()),
            Arc::new(PostgresBackend::new(&url).unwrap()),
        ];
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let b = replicas[i % 2].clone();
                tokio::spawn(async move {
                    let limits = Limits::default();
                    b.increment(write(&limits, "p", "count", SystemTime::now()), 1)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut sums = Vec::new();
        for task in tasks {
            sums.push(task.await.unwrap());
        }
        sums.sort_unstable();
        assert_eq!(sums, (1..=64).collect::<Vec<i64>>());
        for b in &replicas {
            let count = b.get("race", "count", SystemTime::now()).await.unwrap();
            assert_eq!(count.as_deref(), Some(&b"64"[..]));
            assert_eq!(
                b.usage("race").await.unwrap(),
                Usage {
                    keys: 1,
                    bytes: footprint("count", b"64")
                }
            );
        }
        assert_counts_exact(&url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_swap_raced_by_two_replicas_has_one_winner() {
        let Some(url) = fresh_database().await else {
            return;
        };
        let replicas = [
            Arc::new(PostgresBackend::new(&url).unwrap()),
            Arc::new(PostgresBackend::new(&url).unwrap()),
        ];
        // The bucket is there already: the race is on the key alone.
        let limits = Limits::default();
        replicas[0]
            .set(write(&limits, "p", "other", SystemTime::now()), b"", None)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let b = replicas[i % 2].clone();
                tokio::spawn(async move {
                    let limits = Limits::default();
                    let value = format!("{i}");
                    let w = write(&limits, "p", "first", SystemTime::now());
                    let won = b
                        .compare_and_swap(w, None, value.as_bytes(), None)
                        .await
                        .unwrap();
                    won.then_some(value)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let held = replicas[1]
            .get("race", "first", SystemTime::now())
            .await
            .unwrap();
        assert_eq!(held.as_deref(), Some(winners[0].as_bytes()));
        assert_eq!(replicas[0].usage("race").await.unwrap().keys, 2);
        assert_counts_exact(&url).await;
    }

    /// Every kind of write, from two replicas and two plugins at once, in two
    /// buckets, against the limits, with keys expiring and prunes running:
    /// the counts stay those of the rows, no limit is passed, and no two
    /// calls wait on each other in a cycle (a deadlock would fail a call).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn counts_stay_exact_under_concurrent_writes_and_prunes() {
        let Some(url) = fresh_database().await else {
            return;
        };
        let replicas = [
            Arc::new(PostgresBackend::new(&url).unwrap()),
            Arc::new(PostgresBackend::new(&url).unwrap()),
        ];
        let start = SystemTime::now();
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let b = replicas[task % 2].clone();
                tokio::spawn(async move {
                    let limits = Limits {
                        max_keys_per_bucket: 5,
                        max_bytes_per_plugin: 60,
                        ..Limits::default()
                    };
                    let owner = ["p", "q"][task % 2];
                    let (mut done, mut refused) = (0, 0);
                    for step in 0..60 {
                        let now = start + Duration::from_millis(step as u64 * 10);
                        let key =
                            ["a", "b", "c", "d", "e", "f", "g", "h", "i"][(task * 5 + step) % 9];
                        let w = Write {
                            owner,
                            bucket: ["x", "y"][(task / 2 + step) % 2],
                            key,
                            limits: &limits,
                            now,
                        };
                        let ttl = Some(now + Duration::from_millis(25));
                        let answer = match (task + step) % 10 {
                            0..4 => b.set(w, &[b'v'; 8], ttl).await,
                            4 | 5 => b.increment(w, 1).await.map(|_| ()),
                            6 => b.delete(w).await.map(|_| ()),
                            7 | 8 => b
                                .compare_and_swap(w, None, b"swapped", None)
                                .await
                                .map(|_| ()),
                            _ => b.prune(now).await.map(|_| ()),
                        };
                        match answer {
                            Ok(()) => done += 1,
                            Err(StoreError::TooManyKeys { .. } | StoreError::PluginFull { .. }) => {
                                refused += 1
                            }
                            Err(StoreError::NotAnInteger { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    (done, refused)
                })
            })
            .collect();
        let (mut done, mut refused) = (0, 0);
        for task in tasks {
            let (d, r) = task.await.unwrap();
            (done, refused) = (done + d, refused + r);
        }
        assert!(done > 100 && refused > 10, "{done} done, {refused} refused");
        assert_counts_exact(&url).await;
        for bucket in ["x", "y"] {
            assert!(replicas[0].usage(bucket).await.unwrap().keys <= 5);
        }
        let pool = PgPool::connect(&url).await.unwrap();
        let over: i64 =
            sqlx::query_scalar("SELECT count(*) FROM optech_kv_owners WHERE bytes > 60")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(over, 0, "no plugin holds more than its limit");
    }

    /// A plugin writing into many buckets at once, from two replicas, gets
    /// exactly what its byte limit allows: the plugin's row is locked while
    /// each write is judged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_plugins_byte_limit_holds_across_buckets_and_replicas() {
        let Some(url) = fresh_database().await else {
            return;
        };
        let replicas = [
            Arc::new(PostgresBackend::new(&url).unwrap()),
            Arc::new(PostgresBackend::new(&url).unwrap()),
        ];
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let b = replicas[i % 2].clone();
                tokio::spawn(async move {
                    let limits = Limits {
                        max_bytes_per_plugin: 40,
                        ..Limits::default()
                    };
                    let bucket = format!("b{i:02}");
                    let w = Write {
                        owner: "p",
                        bucket: &bucket,
                        key: "key",
                        limits: &limits,
                        now: SystemTime::now(),
                    };
                    match b.set(w, b"1234567", None).await {
                        Ok(()) => true,
                        Err(StoreError::PluginFull { .. }) => false,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        let mut written = 0;
        for task in tasks {
            written += usize::from(task.await.unwrap());
        }
        assert_eq!(written, 4, "four writes of 10 bytes fit in 40");
        assert_counts_exact(&url).await;
    }

    /// Keys list in byte order, whatever the database's collation, and a
    /// prefix is bytes: `%` and `_` match only themselves. Any key fits,
    /// NUL included.
    #[tokio::test]
    async fn keys_list_in_byte_order_and_prefixes_are_literal() {
        let Some(url) = fresh_database().await else {
            return;
        };
        let b = PostgresBackend::new(&url).unwrap();
        let limits = Limits::default();
        let now = SystemTime::now();
        let keys = ["b", "a~", "aé", "a_b", "aXb", "a%b", "A", "a\0"];
        for key in keys {
            b.set(write(&limits, "p", key, now), b"", None)
                .await
                .unwrap();
        }
        let mut sorted = keys.map(String::from).to_vec();
        sorted.sort();
        assert_eq!(b.keys("race", "", None, 100, now).await.unwrap(), sorted);
        assert_eq!(b.keys("race", "a%", None, 100, now).await.unwrap(), ["a%b"]);
        assert_eq!(b.keys("race", "a_", None, 100, now).await.unwrap(), ["a_b"]);
        assert_eq!(
            b.keys("race", "a", Some("a_b"), 2, now).await.unwrap(),
            ["a~", "aé"]
        );
        assert_eq!(
            b.keys("race", "a", Some("0"), 1, now).await.unwrap(),
            ["a\0"]
        );
        assert_eq!(
            b.get("race", "a\0", now).await.unwrap().as_deref(),
            Some(&b""[..])
        );
    }

    /// The outbox and the store run one migrator on one database: both
    /// migrations are recorded once, whichever starts first.
    #[tokio::test]
    async fn the_store_and_the_outbox_share_one_versioned_schema() {
        let Some(url) = fresh_database().await else {
            return;
        };
        let store = PostgresBackend::new(&url).unwrap();
        assert_eq!(store.usage("b").await.unwrap(), Usage::default());
        crate::outbox::PostgresOutbox::open(&url, Duration::from_secs(30))
            .await
            .unwrap();
        let pool = PgPool::connect(&url).await.unwrap();
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(applied, [1, 2, 3]);
    }

    /// A database that is down answers within the acquire timeout, as
    /// unavailable, and the message does not show the password.
    #[tokio::test]
    async fn a_database_that_is_down_answers_unavailable_quickly() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let b =
            PostgresBackend::new(&format!("postgres://optech:s3cr3t@127.0.0.1:{port}/db")).unwrap();
        let limits = Limits::default();
        for call in ["get", "set"] {
            let started = Instant::now();
            let answer = match call {
                "get" => b.get("b", "k", SystemTime::now()).await.map(|_| ()),
                _ => {
                    b.set(write(&limits, "p", "k", SystemTime::now()), b"v", None)
                        .await
                }
            };
            let elapsed = started.elapsed();
            let Err(StoreError::Unavailable(message)) = answer else {
                panic!("{call} on a database that is down: {answer:?}")
            };
            assert!(elapsed < Duration::from_secs(5), "{call} took {elapsed:?}");
            assert!(!message.contains("s3cr3t"), "{message}");
        }
    }

    #[test]
    fn a_url_that_cannot_be_used_is_refused_without_its_password() {
        let Err(StoreError::Unavailable(message)) =
            PostgresBackend::new("postgres://optech:s3cr3t@db:notaport/x")
        else {
            panic!("a URL with a bad port was taken")
        };
        assert!(!message.contains("s3cr3t"), "{message}");
    }

    #[test]
    fn a_prefix_range_ends_above_every_key_that_starts_with_it() {
        assert_eq!(range_end(b"ab"), b"ac");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b""), b"\xff");
    }
}
