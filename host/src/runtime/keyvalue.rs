//! `wasi:keyvalue` (store, atomics, batch) and `optech:plugin/keyvalue-extras`
//! for plugins, on the host's `store`: a plugin opens only the buckets its
//! grant names.
//!
//! Invariants:
//! - every call ends by the request's deadline: a database that does not
//!   answer gives the plugin `other(...)` then, never a hang (epoch
//!   interruption cannot stop a plugin parked in a host call);
//! - a refusal (grant, limit, bad input) is an error value the plugin sees,
//!   never a trap; the host logs refused grants, which are config mistakes;
//! - every call is counted by plugin and outcome, and timed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use super::bindings::optech::plugin::keyvalue_extras;
use super::bindings::wasi::keyvalue::store::{Error, KeyResponse};
use super::bindings::wasi::keyvalue::{atomics, batch, store};
use super::host_api::PluginState;
use super::info::PluginInfo;
use crate::store::{Bucket, StoreError};

/// Keys per page of `list-keys`: a page stays well under a megabyte even at
/// the longest keys the default limits allow.
const PAGE: usize = 1000;

/// What a plugin's `bucket` handle holds.
pub struct BucketHandle(Bucket);

/// What a plugin's `cas` handle holds: the key and its value when read.
pub struct CasHandle {
    bucket: Bucket,
    key: String,
    current: Option<Vec<u8>>,
}

/// What a store call needs of its instance, owned, so that the call's future
/// does not borrow the instance's state across its wait.
struct CallScope {
    info: Arc<PluginInfo>,
    deadline: Instant,
}

impl CallScope {
    /// Runs one store call to its end or the request's deadline, counted and
    /// timed, and turns a refusal into the error the plugin sees.
    async fn run<T>(self, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, Error> {
        let started = Instant::now();
        let result = match tokio::time::timeout_at(self.deadline.into(), call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(
                "no answer before the request's deadline".into(),
            )),
        };
        let meter = &self.info.store_meter;
        meter.seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(value) => {
                meter.ok.inc();
                Ok(value)
            }
            Err(e) => {
                if matches!(e, StoreError::Unavailable(_)) {
                    meter.unavailable.inc();
                    tracing::warn!(plugin = %self.info.name, "store call failed: {e}");
                } else {
                    meter.refused.inc();
                }
                Err(to_wit(e))
            }
        }
    }
}

impl PluginState {
    fn scope(&self) -> CallScope {
        CallScope {
            info: self.info.clone(),
            deadline: self.deadline,
        }
    }

    fn bucket(&self, handle: &Resource<BucketHandle>) -> Result<Bucket, Error> {
        self.table
            .get(handle)
            .map(|b| b.0.clone())
            .map_err(|e| Error::Other(format!("bad bucket handle: {e}")))
    }
}

fn to_wit(e: StoreError) -> Error {
    match e {
        StoreError::NotGranted { .. } => Error::AccessDenied,
        other => Error::Other(other.to_string()),
    }
}

/// The cursor of a page: its last key when the page is full.
fn page(keys: Vec<String>) -> KeyResponse {
    let cursor = (keys.len() == PAGE).then(|| keys.last().cloned()).flatten();
    KeyResponse { keys, cursor }
}

impl store::Host for PluginState {
    async fn open(&mut self, identifier: String) -> Result<Resource<BucketHandle>, Error> {
        let bucket = match self.info.grant.open(&identifier) {
            Ok(bucket) => bucket,
            Err(e) => {
                // A config mistake, not the plugin's: say it where operators look.
                tracing::warn!(plugin = %self.info.name, "{e}");
                self.info.store_meter.refused.inc();
                return Err(to_wit(e));
            }
        };
        self.table
            .push(BucketHandle(bucket))
            .map_err(|e| Error::Other(format!("cannot open another bucket: {e}")))
    }
}

impl store::HostBucket for PluginState {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> Result<Option<Vec<u8>>, Error> {
        let bucket = self.bucket(&bucket)?;
        self.scope().run(bucket.get(&key)).await
    }

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        let bucket = self.bucket(&bucket)?;
        self.scope().run(bucket.set(&key, &value, None)).await
    }

    async fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<(), Error> {
        let bucket = self.bucket(&bucket)?;
        self.scope().run(bucket.delete(&key)).await.map(|_| ())
    }

    async fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<bool, Error> {
        let bucket = self.bucket(&bucket)?;
        self.scope().run(bucket.exists(&key)).await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> Result<KeyResponse, Error> {
        let bucket = self.bucket(&bucket)?;
        let keys = self
            .scope()
            .run(bucket.keys("", cursor.as_deref(), PAGE))
            .await?;
        Ok(page(keys))
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for PluginState {
    async fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> Result<i64, Error> {
        let bucket = self.bucket(&bucket)?;
        self.scope().run(bucket.increment(&key, delta)).await
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> Result<(), atomics::CasError> {
        let cas = self
            .table
            .delete(cas)
            .map_err(|e| atomics::CasError::StoreError(Error::Other(format!("bad cas: {e}"))))?;
        let swapped = self
            .scope()
            .run(
                cas.bucket
                    .compare_and_swap(&cas.key, cas.current.as_deref(), &value, None),
            )
            .await
            .map_err(atomics::CasError::StoreError)?;
        if swapped {
            return Ok(());
        }
        // Hand back what the key holds now, so the plugin can compute again.
        let current = self
            .scope()
            .run(cas.bucket.get(&cas.key))
            .await
            .map_err(atomics::CasError::StoreError)?;
        let again = self
            .table
            .push(CasHandle { current, ..cas })
            .map_err(|e| atomics::CasError::StoreError(Error::Other(e.to_string())))?;
        Err(atomics::CasError::CasFailed(again))
    }
}

impl atomics::HostCas for PluginState {
    async fn new(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> Result<Resource<CasHandle>, Error> {
        let bucket = self.bucket(&bucket)?;
        let current = self.scope().run(bucket.get(&key)).await?;
        self.table
            .push(CasHandle {
                bucket,
                key,
                current,
            })
            .map_err(|e| Error::Other(e.to_string()))
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> Result<Option<Vec<u8>>, Error> {
        self.table
            .get(&cas)
            .map(|cas| cas.current.clone())
            .map_err(|e| Error::Other(format!("bad cas: {e}")))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for PluginState {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, Error> {
        let bucket = self.bucket(&bucket)?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.scope().run(bucket.get(&key)).await?;
            found.push((key, value));
        }
        Ok(found)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Error> {
        let bucket = self.bucket(&bucket)?;
        for (key, value) in key_values {
            self.scope().run(bucket.set(&key, &value, None)).await?;
        }
        Ok(())
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Result<(), Error> {
        let bucket = self.bucket(&bucket)?;
        for key in keys {
            self.scope().run(bucket.delete(&key)).await?;
        }
        Ok(())
    }
}

impl keyvalue_extras::Host for PluginState {
    async fn set_with_ttl(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
        ttl_seconds: u64,
    ) -> Result<(), Error> {
        let bucket = self.bucket(&bucket)?;
        let ttl = Duration::from_secs(ttl_seconds);
        self.scope().run(bucket.set(&key, &value, Some(ttl))).await
    }

    async fn list_keys_with_prefix(
        &mut self,
        bucket: Resource<BucketHandle>,
        prefix: String,
        cursor: Option<String>,
    ) -> Result<KeyResponse, Error> {
        let bucket = self.bucket(&bucket)?;
        let keys = self
            .scope()
            .run(bucket.keys(&prefix, cursor.as_deref(), PAGE))
            .await?;
        Ok(page(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_carries_a_cursor_and_a_short_one_ends() {
        let full: Vec<String> = (0..PAGE).map(|i| format!("k{i:04}")).collect();
        let last = full.last().cloned();
        assert_eq!(page(full).cursor, last);
        assert_eq!(page(vec!["a".into()]).cursor, None);
        assert_eq!(page(vec![]).cursor, None);
    }

    #[test]
    fn only_a_refused_grant_is_access_denied() {
        let denied = to_wit(StoreError::NotGranted {
            plugin: "p".into(),
            bucket: "b".into(),
        });
        assert!(matches!(denied, Error::AccessDenied));
        let Error::Other(message) = to_wit(StoreError::ValueTooLarge { len: 9, limit: 8 }) else {
            panic!("a limit is not access-denied")
        };
        assert!(message.contains("store.max_value_size"), "{message}");
    }
}
