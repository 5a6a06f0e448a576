//! Plugins' key-value store: named buckets a plugin is granted in
//! `optech.toml` (`stores = [...]`), with limits and a time to live per key.
//!
//! A fresh instance per request remembers nothing; a bucket is where a plugin
//! keeps what must outlive a request (a cached token, a counter). Backends:
//! `sqlite` (a file in the data directory, the default), `postgres` (the
//! outbox's database, when that is PostgreSQL, so every replica shares one
//! store), `memory` (tests).
//! Every backend keeps the same invariants, checked by the same tests
//! (`conformance`): an expired key reads as absent and is overwritten as
//! absent; increment and compare-and-swap are atomic; a refused write changes
//! nothing; the bytes a plugin holds are what it wrote and not yet deleted,
//! overwritten or seen expire.
//!
//! Nothing here knows the runtime or the server: `Stores` hands a plugin its
//! `Grant`, and the grant is all a plugin's calls go through.

pub mod memory;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
mod conformance;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::config::StoreSettings;

/// Why a store call was refused. The message is what the plugin is told: it
/// names the limit or the grant and the setting that changes it.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    #[error(
        "bucket `{bucket}` is not granted to plugin `{plugin}`: add it to `stores` in [plugins.{plugin}] of optech.toml"
    )]
    NotGranted { plugin: String, bucket: String },
    #[error("a key must not be empty")]
    EmptyKey,
    #[error("a key of {len} bytes is over the limit of {limit} (store.max_key_size)")]
    KeyTooLarge { len: usize, limit: usize },
    #[error("a value of {len} bytes is over the limit of {limit} (store.max_value_size)")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("bucket `{bucket}` holds {limit} keys, its limit (store.max_keys_per_bucket)")]
    TooManyKeys { bucket: String, limit: u64 },
    #[error(
        "plugin `{plugin}` would hold more than {limit} bytes in its buckets (store.max_bytes_per_plugin)"
    )]
    PluginFull { plugin: String, limit: u64 },
    #[error("key `{key}` does not hold a decimal integer, so it cannot be incremented")]
    NotAnInteger { key: String },
    #[error("incrementing key `{key}` overflows a 64-bit integer")]
    Overflow { key: String },
    #[error("a time to live must be at least 1 second")]
    ZeroTtl,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// What one plugin may put in the store: `[store]` of `optech.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_keys_per_bucket: u64,
    pub max_bytes_per_plugin: u64,
}

impl From<&StoreSettings> for Limits {
    fn from(settings: &StoreSettings) -> Self {
        let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            max_key_bytes: bytes(settings.max_key_size),
            max_value_bytes: bytes(settings.max_value_size),
            max_keys_per_bucket: settings.max_keys_per_bucket,
            max_bytes_per_plugin: settings.max_bytes_per_plugin,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&StoreSettings::default())
    }
}

/// What a key holds: its bytes, and when it expires, if ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub expires: Option<SystemTime>,
}

/// One write, as a backend receives it: checked against the limits it carries.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The plugin writing, which the written bytes count against.
    pub owner: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    pub limits: &'a Limits,
    /// The time every expiry in the call is judged by.
    pub now: SystemTime,
}

/// Keys and bytes a bucket holds, expired keys not yet pruned included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub keys: u64,
    pub bytes: u64,
}

/// Where buckets live. Every method is one atomic step: no caller reads and
/// then writes.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The key's value, or `None` if absent or expired by `now`.
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets the key, replacing any value; `expires` `None` keeps it until deleted.
    async fn set(
        &self,
        write: Write<'_>,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<(), StoreError>;

    /// Deletes the key; says whether it was there (and not expired).
    async fn delete(&self, write: Write<'_>) -> Result<bool, StoreError>;

    /// Adds `by` to the decimal integer the key holds (absent or expired: 0)
    /// and returns the sum. The key keeps its expiry; a new one has none.
    async fn increment(&self, write: Write<'_>, by: i64) -> Result<i64, StoreError>;

    /// Sets the key to `value` only if it holds `expected` now (`None`:
    /// absent or expired); says whether it did.
    async fn compare_and_swap(
        &self,
        write: Write<'_>,
        expected: Option<&[u8]>,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<bool, StoreError>;

    /// Keys of the bucket that start with `prefix`, in byte order, not expired
    /// by `now`: at most `limit`, after `after` if given.
    async fn keys(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError>;

    /// What the bucket holds now.
    async fn usage(&self, bucket: &str) -> Result<Usage, StoreError>;

    /// Deletes keys expired by `now`; returns how many.
    async fn prune(&self, now: SystemTime) -> Result<u64, StoreError>;
}

/// The store as the host holds it: one backend, the limits, and the clock.
#[derive(Clone)]
pub struct Stores {
    backend: Arc<dyn Backend>,
    limits: Limits,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Stores {
    pub fn new(backend: Arc<dyn Backend>, limits: Limits) -> Self {
        Self { backend, limits }
    }

    /// The handle a plugin's calls go through: only `buckets` open.
    pub fn grant(&self, plugin: &str, buckets: impl IntoIterator<Item = String>) -> Grant {
        Grant {
            stores: self.clone(),
            plugin: plugin.into(),
            buckets: Arc::new(buckets.into_iter().collect()),
        }
    }

    /// Deletes expired keys every `period` until the returned guard drops,
    /// so keys set once and never read again do not hold their bytes forever.
    pub fn prune_every(&self, period: Duration) -> Pruner {
        let backend = self.backend.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match backend.prune(SystemTime::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!("store: pruned {n} expired keys"),
                    Err(e) => tracing::warn!("store: pruning expired keys failed: {e}"),
                }
            }
        });
        Pruner(task)
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// The background pruning of [`Stores::prune_every`]; stops when dropped.
pub struct Pruner(tokio::task::JoinHandle<()>);

impl Drop for Pruner {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One plugin's access to the store: the buckets `optech.toml` grants it.
#[derive(Clone)]
pub struct Grant {
    stores: Stores,
    plugin: Arc<str>,
    buckets: Arc<BTreeSet<String>>,
}

impl Grant {
    /// Opens a granted bucket; any other is refused, naming the grant to add.
    pub fn open(&self, bucket: &str) -> Result<Bucket, StoreError> {
        if !self.buckets.contains(bucket) {
            return Err(StoreError::NotGranted {
                plugin: self.plugin.to_string(),
                bucket: bucket.into(),
            });
        }
        Ok(Bucket {
            grant: self.clone(),
            name: bucket.into(),
        })
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }
}

/// A granted bucket: every call checks its input against the limits before
/// the backend sees it.
#[derive(Clone)]
pub struct Bucket {
    grant: Grant,
    name: Arc<str>,
}

impl Bucket {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> &dyn Backend {
        self.grant.stores.backend.as_ref()
    }

    fn limits(&self) -> &Limits {
        &self.grant.stores.limits
    }

    fn write<'a>(&'a self, key: &'a str, now: SystemTime) -> Result<Write<'a>, StoreError> {
        self.check_key(key)?;
        Ok(Write {
            owner: &self.grant.plugin,
            bucket: &self.name,
            key,
            limits: self.limits(),
            now,
        })
    }

    fn check_key(&self, key: &str) -> Result<(), StoreError> {
        let limit = self.limits().max_key_bytes;
        match key.len() {
            0 => Err(StoreError::EmptyKey),
            len if len > limit => Err(StoreError::KeyTooLarge { len, limit }),
            _ => Ok(()),
        }
    }

    fn check_value(&self, value: &[u8]) -> Result<(), StoreError> {
        let limit = self.limits().max_value_bytes;
        if value.len() > limit {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                limit,
            });
        }
        Ok(())
    }

    fn expiry(now: SystemTime, ttl: Option<Duration>) -> Result<Option<SystemTime>, StoreError> {
        match ttl {
            None => Ok(None),
            Some(ttl) if ttl < Duration::from_secs(1) => Err(StoreError::ZeroTtl),
            // A time to live past what the clock can hold never comes.
            Some(ttl) => Ok(now.checked_add(ttl)),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_key(key)?;
        self.backend().get(&self.name, key, SystemTime::now()).await
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.get(key).await?.is_some())
    }

    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let now = SystemTime::now();
        let write = self.write(key, now)?;
        self.check_value(value)?;
        let expires = Self::expiry(now, ttl)?;
        self.backend().set(write, value, expires).await
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let write = self.write(key, SystemTime::now())?;
        self.backend().delete(write).await
    }

    pub async fn increment(&self, key: &str, by: i64) -> Result<i64, StoreError> {
        let write = self.write(key, SystemTime::now())?;
        self.backend().increment(write, by).await
    }

    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let now = SystemTime::now();
        let write = self.write(key, now)?;
        self.check_value(value)?;
        let expires = Self::expiry(now, ttl)?;
        self.backend()
            .compare_and_swap(write, expected, value, expires)
            .await
    }

    /// Keys starting with `prefix`: at most `limit`, after `after` if given.
    pub async fn keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.backend()
            .keys(&self.name, prefix, after, limit, SystemTime::now())
            .await
    }
}

/// The integer a stored value holds, for `increment`: absent is 0.
fn stored_integer(key: &str, value: Option<&[u8]>) -> Result<i64, StoreError> {
    let Some(value) = value else { return Ok(0) };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| StoreError::NotAnInteger { key: key.into() })
}

/// `current + by`, or the overflow error naming the key.
fn add(key: &str, current: i64, by: i64) -> Result<i64, StoreError> {
    current
        .checked_add(by)
        .ok_or_else(|| StoreError::Overflow { key: key.into() })
}

/// What a write finds where it goes, to be judged by the limits.
struct Standing<'a> {
    /// The key's writer and footprint if it is there, expired or not.
    existing: Option<(&'a str, u64)>,
    /// Keys the bucket holds, expired ones not yet pruned included.
    bucket_keys: u64,
    /// Bytes the writer holds.
    held: u64,
}

/// Whether a write fits the bucket's key count and its writer's bytes: a new
/// key needs room in the bucket; the writer pays for what it writes, less
/// what it wrote there before.
fn admit(w: &Write<'_>, value: &[u8], standing: Standing<'_>) -> Result<(), StoreError> {
    if standing.existing.is_none() && standing.bucket_keys >= w.limits.max_keys_per_bucket {
        return Err(StoreError::TooManyKeys {
            bucket: w.bucket.into(),
            limit: w.limits.max_keys_per_bucket,
        });
    }
    let freed = standing
        .existing
        .filter(|(owner, _)| *owner == w.owner)
        .map_or(0, |(_, bytes)| bytes);
    if standing.held.saturating_sub(freed) + footprint(w.key, value) > w.limits.max_bytes_per_plugin
    {
        return Err(StoreError::PluginFull {
            plugin: w.owner.into(),
            limit: w.limits.max_bytes_per_plugin,
        });
    }
    Ok(())
}

/// The bytes a key and its value count against their writer.
fn footprint(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

// Shared by the SQL backends, which keep times as milliseconds since the epoch.

/// What a key holds, as a SQL backend reads it.
struct Row {
    value: Vec<u8>,
    owner: String,
    expires: Option<i64>,
}

impl Row {
    fn live(&self, now: i64) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn expired(expires: Option<SystemTime>, now: SystemTime) -> bool {
    expires.is_some_and(|t| t <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(limits: Limits) -> Bucket {
        let stores = Stores::new(Arc::new(memory::MemoryBackend::default()), limits);
        stores
            .grant("orders", ["tokens".to_string()])
            .open("tokens")
            .unwrap()
    }

    #[test]
    fn a_bucket_not_granted_is_refused_naming_the_grant() {
        let stores = Stores::new(
            Arc::new(memory::MemoryBackend::default()),
            Limits::default(),
        );
        let grant = stores.grant("orders", ["tokens".to_string()]);
        let Err(err) = grant.open("counters") else {
            panic!("opened a bucket not granted")
        };
        assert_eq!(
            err.to_string(),
            "bucket `counters` is not granted to plugin `orders`: add it to `stores` in [plugins.orders] of optech.toml"
        );
        assert!(grant.open("tokens").is_ok());
    }

    #[tokio::test]
    async fn keys_values_and_ttls_are_checked_before_the_backend() {
        let limits = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
            ..Limits::default()
        };
        let b = bucket(limits);
        assert_eq!(b.set("", b"v", None).await, Err(StoreError::EmptyKey));
        assert_eq!(
            b.set("12345", b"v", None).await,
            Err(StoreError::KeyTooLarge { len: 5, limit: 4 })
        );
        assert_eq!(
            b.set("k", b"123456789", None).await,
            Err(StoreError::ValueTooLarge { len: 9, limit: 8 })
        );
        assert_eq!(
            b.set("k", b"v", Some(Duration::from_millis(10))).await,
            Err(StoreError::ZeroTtl)
        );
        assert_eq!(b.get("k").await, Ok(None), "nothing refused was written");
        b.set("k", b"12345678", Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"12345678"[..]));
        let err = b.set("k", b"123456789", None).await.unwrap_err();
        assert!(err.to_string().contains("store.max_value_size"), "{err}");
    }

    #[tokio::test]
    async fn the_pruner_deletes_expired_keys_in_the_background() {
        let backend = Arc::new(memory::MemoryBackend::default());
        let stores = Stores::new(backend.clone(), Limits::default());
        let now = SystemTime::now();
        let limits = Limits::default();
        let write = |key| Write {
            owner: "p",
            bucket: "b",
            key,
            limits: &limits,
            now,
        };
        let past = now.checked_sub(Duration::from_secs(1));
        backend.set(write("old"), b"v", past).await.unwrap();
        backend.set(write("kept"), b"v", None).await.unwrap();
        assert_eq!(backend.usage("b").await.unwrap().keys, 2);
        let _pruner = stores.prune_every(Duration::from_millis(10));
        let started = std::time::Instant::now();
        while backend.usage("b").await.unwrap().keys != 1 {
            assert!(started.elapsed() < Duration::from_secs(5), "never pruned");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            backend
                .get("b", "kept", SystemTime::now())
                .await
                .unwrap()
                .as_deref(),
            Some(&b"v"[..])
        );
    }

    #[test]
    fn increments_read_decimal_integers_and_refuse_overflow() {
        assert_eq!(stored_integer("k", None), Ok(0));
        assert_eq!(stored_integer("k", Some(b"-12")), Ok(-12));
        assert!(matches!(
            stored_integer("k", Some(b"twelve")),
            Err(StoreError::NotAnInteger { .. })
        ));
        assert!(matches!(
            add("k", i64::MAX, 1),
            Err(StoreError::Overflow { .. })
        ));
    }
}
