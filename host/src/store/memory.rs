//! The store in memory, one process's and gone at exit: for tests, and for
//! hosts that want a cache and no file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use super::{
    Backend, Standing, StoreError, Usage, Write, add, admit, expired, footprint, stored_integer,
};

/// Buckets in a map under one lock: every call is one atomic step.
#[derive(Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By bucket, then key.
    entries: BTreeMap<String, BTreeMap<String, Stored>>,
    /// Bytes each plugin's writes hold.
    owned: HashMap<String, u64>,
}

struct Stored {
    value: Vec<u8>,
    expires: Option<SystemTime>,
    owner: String,
}

impl MemoryBackend {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn live(&self, bucket: &str, key: &str, now: SystemTime) -> Option<&Stored> {
        self.entries
            .get(bucket)?
            .get(key)
            .filter(|s| !expired(s.expires, now))
    }

    /// Puts a value, within the limits, or changes nothing.
    fn put(
        &mut self,
        w: &Write<'_>,
        value: Vec<u8>,
        expires: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        if let Err(refused) = self.admit(w, &value) {
            // Expired keys still count until pruned: prune, then judge again.
            self.prune(w.now);
            self.admit(w, &value).map_err(|_| refused)?;
        }
        let stored = Stored {
            value,
            expires,
            owner: w.owner.into(),
        };
        let new = footprint(w.key, &stored.value);
        if let Some(old) = self
            .entries
            .entry(w.bucket.into())
            .or_default()
            .insert(w.key.into(), stored)
        {
            self.release(&old.owner, footprint(w.key, &old.value));
        }
        *self.owned.entry(w.owner.into()).or_default() += new;
        Ok(())
    }

    /// Whether the write fits the limits, by what the maps hold now.
    fn admit(&self, w: &Write<'_>, value: &[u8]) -> Result<(), StoreError> {
        let bucket = self.entries.get(w.bucket);
        let existing = bucket
            .and_then(|b| b.get(w.key))
            .map(|old| (old.owner.as_str(), footprint(w.key, &old.value)));
        let standing = Standing {
            existing,
            bucket_keys: bucket.map_or(0, |b| b.len() as u64),
            held: self.owned.get(w.owner).copied().unwrap_or(0),
        };
        admit(w, value, standing)
    }

    fn release(&mut self, owner: &str, bytes: u64) {
        if let Some(held) = self.owned.get_mut(owner) {
            *held = held.saturating_sub(bytes);
        }
    }

    fn remove(&mut self, bucket: &str, key: &str) -> Option<Stored> {
        let old = self.entries.get_mut(bucket)?.remove(key)?;
        self.release(&old.owner, footprint(key, &old.value));
        Some(old)
    }

    fn prune(&mut self, now: SystemTime) -> u64 {
        let gone: Vec<(String, String)> = self
            .entries
            .iter()
            .flat_map(|(bucket, keys)| {
                keys.iter()
                    .filter(|(_, s)| expired(s.expires, now))
                    .map(|(key, _)| (bucket.clone(), key.clone()))
            })
            .collect();
        for (bucket, key) in &gone {
            self.remove(bucket, key);
        }
        gone.len() as u64
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().live(bucket, key, now).map(|s| s.value.clone()))
    }

    async fn set(
        &self,
        write: Write<'_>,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        self.lock().put(&write, value.to_vec(), expires)
    }

    async fn delete(&self, write: Write<'_>) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let was = state.live(write.bucket, write.key, write.now).is_some();
        state.remove(write.bucket, write.key);
        Ok(was)
    }

    async fn increment(&self, write: Write<'_>, by: i64) -> Result<i64, StoreError> {
        let mut state = self.lock();
        let live = state.live(write.bucket, write.key, write.now);
        let expires = live.and_then(|s| s.expires);
        let current = stored_integer(write.key, live.map(|s| s.value.as_slice()))?;
        let sum = add(write.key, current, by)?;
        state.put(&write, sum.to_string().into_bytes(), expires)?;
        Ok(sum)
    }

    async fn compare_and_swap(
        &self,
        write: Write<'_>,
        expected: Option<&[u8]>,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let current = state
            .live(write.bucket, write.key, write.now)
            .map(|s| s.value.as_slice());
        if current != expected {
            return Ok(false);
        }
        state.put(&write, value.to_vec(), expires)?;
        Ok(true)
    }

    async fn keys(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        let state = self.lock();
        let Some(keys) = state.entries.get(bucket) else {
            return Ok(Vec::new());
        };
        let start = match after {
            Some(after) if after > prefix => after,
            _ => prefix,
        };
        Ok(keys
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .filter(|(key, _)| Some(key.as_str()) != after)
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, s)| !expired(s.expires, now))
            .take(limit)
            .map(|(key, _)| key.clone())
            .collect())
    }

    async fn usage(&self, bucket: &str) -> Result<Usage, StoreError> {
        let state = self.lock();
        let Some(keys) = state.entries.get(bucket) else {
            return Ok(Usage::default());
        };
        Ok(Usage {
            keys: keys.len() as u64,
            bytes: keys.iter().map(|(k, s)| footprint(k, &s.value)).sum(),
        })
    }

    async fn prune(&self, now: SystemTime) -> Result<u64, StoreError> {
        Ok(self.lock().prune(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_backend_keeps_the_store_invariants() {
        crate::store::conformance::run(&MemoryBackend::default()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_increments_and_swaps_are_atomic() {
        crate::store::conformance::races(std::sync::Arc::new(MemoryBackend::default())).await;
    }
}
