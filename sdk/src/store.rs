//! A key-value store that outlives the instance: a cached token, a counter, a
//! note that a request was already answered.
//!
//! ```no_run
//! use optech_sdk::{Data, Error, Request, store};
//!
//! fn handle(req: Request) -> Result<Data, Error> {
//!     let counters = store::open("counters")?;
//!     let calls = counters.increment(req.key(), 1)?;
//!     Ok(Data::new().with("calls", calls.to_string()))
//! }
//! # optech_sdk::export!(handle);
//! ```
//!
//! A plugin opens only the buckets `stores = [...]` in its `[plugins.NAME]`
//! table of `optech.toml` grants; any other is refused. Values are text (or
//! bytes, with the `_bytes` methods); a counter holds its decimal text. Each
//! call is one step on the host's store (SQLite, or PostgreSQL shared by every
//! replica), so `increment` and `compare_and_swap` are atomic however many
//! instances and replicas run. Limits on key and value sizes, keys per bucket
//! and bytes per plugin are the host's `[store]` settings; a refusal is a
//! [`StoreError`] with the host's message, and so is a store that is down.
//!
//! The host speaks `wasi:keyvalue` 0.2.0-draft2, so a component that uses it
//! directly runs too. In unit tests (`cargo test`, outside the host) every
//! bucket is a map in memory, one per test thread: see
//! [`testing`](crate::testing).

use std::fmt;
use std::time::Duration;

/// Why a store call failed: a bucket not granted, a limit, a store that is
/// down or did not answer before the request's deadline. The message says
/// which, and what setting changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(String);

impl StoreError {
    /// The host's message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// A store error fails the request (500 `plugin_error`), so `?` works in a handler.
impl From<StoreError> for crate::Error {
    fn from(e: StoreError) -> Self {
        crate::Error::failed(e.to_string())
    }
}

/// Opens a bucket this plugin is granted.
pub fn open(name: &str) -> Result<Bucket, StoreError> {
    Ok(Bucket {
        inner: imp::Bucket::open(name)?,
    })
}

/// A bucket: keys and their values, shared by every instance of every
/// plugin granted the same name.
pub struct Bucket {
    inner: imp::Bucket,
}

impl Bucket {
    /// The key's value as text; `None` if absent or expired. A value that is
    /// not UTF-8 is an error: read it with [`get_bytes`](Self::get_bytes).
    pub fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self.inner.get(key)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| StoreError(format!("key `{key}` holds bytes that are not UTF-8"))),
        }
    }

    /// The key's value; `None` if absent or expired.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    /// Sets the key, with no expiry.
    pub fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.inner.set(key, value.as_bytes(), None)
    }

    /// Sets the key, to expire after `ttl` (whole seconds, at least one).
    pub fn set_with_ttl(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.inner.set(key, value.as_bytes(), Some(ttl))
    }

    /// Sets the key to bytes; `ttl` as in [`set_with_ttl`](Self::set_with_ttl).
    pub fn set_bytes(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.inner.set(key, value, ttl)
    }

    /// Deletes the key; nothing happens if it is absent.
    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key)
    }

    /// Whether the key holds a value now.
    pub fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.inner.get(key)?.is_some())
    }

    /// Adds `by` to the integer the key holds (absent: 0), in one step, and
    /// returns the sum. The key keeps its expiry, if it had one.
    pub fn increment(&self, key: &str, by: i64) -> Result<i64, StoreError> {
        self.inner.increment(key, by)
    }

    /// The keys that start with `prefix` (`""`: all), in byte order.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.keys(prefix)
    }

    /// Sets the key to `value` only if it holds `expected` now (`None`:
    /// absent), in one step; says whether it did. Of several instances racing
    /// from the same `expected`, one wins.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<bool, StoreError> {
        self.inner
            .compare_and_swap(key, expected.map(str::as_bytes), value.as_bytes())
    }

    /// [`compare_and_swap`](Self::compare_and_swap) of bytes.
    pub fn compare_and_swap_bytes(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        self.inner.compare_and_swap(key, expected, value)
    }
}

/// A time to live as the host takes it: whole seconds, at least one.
fn ttl_seconds(ttl: Duration) -> Result<u64, StoreError> {
    match ttl.as_secs() {
        0 => Err(StoreError(
            "a time to live must be at least 1 second".into(),
        )),
        secs => Ok(secs),
    }
}

/// The host's store, through `wasi:keyvalue` and `keyvalue-extras`.
#[cfg(target_arch = "wasm32")]
mod imp {
    use std::time::Duration;

    use super::{StoreError, ttl_seconds};
    use crate::bindings::optech::plugin::keyvalue_extras;
    use crate::bindings::wasi::keyvalue::{atomics, store};

    pub struct Bucket {
        name: String,
        handle: store::Bucket,
    }

    impl Bucket {
        pub fn open(name: &str) -> Result<Self, StoreError> {
            let handle = store::open(name).map_err(|e| error(name, e))?;
            Ok(Self {
                name: name.into(),
                handle,
            })
        }

        fn err(&self, e: store::Error) -> StoreError {
            error(&self.name, e)
        }

        pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.handle.get(key).map_err(|e| self.err(e))
        }

        pub fn set(
            &self,
            key: &str,
            value: &[u8],
            ttl: Option<Duration>,
        ) -> Result<(), StoreError> {
            match ttl {
                None => self.handle.set(key, value),
                Some(ttl) => {
                    keyvalue_extras::set_with_ttl(&self.handle, key, value, ttl_seconds(ttl)?)
                }
            }
            .map_err(|e| self.err(e))
        }

        pub fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.handle.delete(key).map_err(|e| self.err(e))
        }

        pub fn increment(&self, key: &str, by: i64) -> Result<i64, StoreError> {
            atomics::increment(&self.handle, key, by).map_err(|e| self.err(e))
        }

        pub fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page =
                    keyvalue_extras::list_keys_with_prefix(&self.handle, prefix, cursor.as_deref())
                        .map_err(|e| self.err(e))?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => return Ok(keys),
                }
            }
        }

        pub fn compare_and_swap(
            &self,
            key: &str,
            expected: Option<&[u8]>,
            value: &[u8],
        ) -> Result<bool, StoreError> {
            let cas = atomics::Cas::new(&self.handle, key).map_err(|e| self.err(e))?;
            if cas.current().map_err(|e| self.err(e))?.as_deref() != expected {
                return Ok(false);
            }
            match atomics::swap(cas, value) {
                Ok(()) => Ok(true),
                Err(atomics::CasError::CasFailed(_)) => Ok(false),
                Err(atomics::CasError::StoreError(e)) => Err(self.err(e)),
            }
        }
    }

    fn error(bucket: &str, e: store::Error) -> StoreError {
        StoreError(match e {
            store::Error::AccessDenied => format!(
                "bucket `{bucket}` is not granted to this plugin: add it to `stores` in its [plugins.NAME] table of optech.toml"
            ),
            store::Error::NoSuchStore => format!("there is no bucket `{bucket}`"),
            store::Error::Other(message) => message,
        })
    }
}

/// The test double: every bucket a map in memory, per test thread, with the
/// host's rules for expiry, counters and key order.
#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::collections::{BTreeMap, HashMap};
    use std::time::{Duration, Instant};

    use super::{StoreError, ttl_seconds};

    struct Entry {
        value: Vec<u8>,
        expires: Option<Instant>,
    }

    thread_local! {
        static BUCKETS: RefCell<HashMap<String, BTreeMap<String, Entry>>> = RefCell::new(HashMap::new());
        static SKEW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    fn now() -> Instant {
        Instant::now() + SKEW.with(Cell::get)
    }

    pub fn clear() {
        BUCKETS.with(|b| b.borrow_mut().clear());
        SKEW.with(|s| s.set(Duration::ZERO));
    }

    pub fn advance(by: Duration) {
        SKEW.with(|s| s.set(s.get() + by));
    }

    pub struct Bucket {
        name: String,
    }

    impl Bucket {
        pub fn open(name: &str) -> Result<Self, StoreError> {
            Ok(Self { name: name.into() })
        }

        /// Runs `f` on the bucket's live keys (expired ones dropped first).
        fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Entry>) -> T) -> T {
            BUCKETS.with(|b| {
                let mut buckets = b.borrow_mut();
                let bucket = buckets.entry(self.name.clone()).or_default();
                let now = now();
                bucket.retain(|_, e| e.expires.is_none_or(|t| t > now));
                f(bucket)
            })
        }

        fn check_key(key: &str) -> Result<(), StoreError> {
            if key.is_empty() {
                return Err(StoreError("a key must not be empty".into()));
            }
            Ok(())
        }

        pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Self::check_key(key)?;
            Ok(self.with(|b| b.get(key).map(|e| e.value.clone())))
        }

        pub fn set(
            &self,
            key: &str,
            value: &[u8],
            ttl: Option<Duration>,
        ) -> Result<(), StoreError> {
            Self::check_key(key)?;
            let expires = match ttl {
                None => None,
                Some(ttl) => Some(now() + Duration::from_secs(ttl_seconds(ttl)?)),
            };
            let value = value.to_vec();
            self.with(|b| b.insert(key.into(), Entry { value, expires }));
            Ok(())
        }

        pub fn delete(&self, key: &str) -> Result<(), StoreError> {
            Self::check_key(key)?;
            self.with(|b| b.remove(key));
            Ok(())
        }

        pub fn increment(&self, key: &str, by: i64) -> Result<i64, StoreError> {
            Self::check_key(key)?;
            self.with(|b| {
                let current = match b.get(key) {
                    None => 0,
                    Some(e) => std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|t| t.parse::<i64>().ok())
                        .ok_or_else(|| {
                            StoreError(format!(
                                "key `{key}` does not hold a decimal integer, so it cannot be incremented"
                            ))
                        })?,
                };
                let sum = current.checked_add(by).ok_or_else(|| {
                    StoreError(format!("incrementing key `{key}` overflows a 64-bit integer"))
                })?;
                let expires = b.get(key).and_then(|e| e.expires);
                b.insert(
                    key.into(),
                    Entry {
                        value: sum.to_string().into_bytes(),
                        expires,
                    },
                );
                Ok(sum)
            })
        }

        pub fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            Ok(self.with(|b| {
                b.keys()
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect()
            }))
        }

        pub fn compare_and_swap(
            &self,
            key: &str,
            expected: Option<&[u8]>,
            value: &[u8],
        ) -> Result<bool, StoreError> {
            Self::check_key(key)?;
            Ok(self.with(|b| {
                if b.get(key).map(|e| e.value.as_slice()) != expected {
                    return false;
                }
                let value = value.to_vec();
                b.insert(
                    key.into(),
                    Entry {
                        value,
                        expires: None,
                    },
                );
                true
            }))
        }
    }
}

/// For [`testing`](crate::testing): empties this thread's buckets.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn clear() {
    imp::clear();
}

/// For [`testing`](crate::testing): moves this thread's store clock on.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn advance(by: Duration) {
    imp::advance(by);
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn the_double_keeps_the_hosts_rules() {
        crate::testing::clear_store();
        let b = open("tokens").unwrap();
        assert_eq!(b.get("t").unwrap(), None);
        b.set_with_ttl("t", "abc", Duration::from_secs(60)).unwrap();
        assert_eq!(b.get("t").unwrap().as_deref(), Some("abc"));
        assert!(b.exists("t").unwrap());
        crate::testing::advance_store_clock(Duration::from_secs(60));
        assert_eq!(b.get("t").unwrap(), None, "expired at its time to live");
        assert!(
            b.set_with_ttl("t", "x", Duration::from_millis(500))
                .is_err()
        );

        assert_eq!(b.increment("n", 2).unwrap(), 2);
        assert_eq!(b.increment("n", -5).unwrap(), -3);
        assert_eq!(b.get("n").unwrap().as_deref(), Some("-3"));
        b.set("word", "two").unwrap();
        assert!(b.increment("word", 1).is_err());

        assert!(b.compare_and_swap("c", None, "1").unwrap());
        assert!(!b.compare_and_swap("c", None, "2").unwrap());
        assert!(b.compare_and_swap("c", Some("1"), "2").unwrap());
        assert_eq!(b.get("c").unwrap().as_deref(), Some("2"));

        b.set("user:b", "").unwrap();
        b.set("user:a", "").unwrap();
        assert_eq!(b.keys("user:").unwrap(), ["user:a", "user:b"]);
        b.delete("user:a").unwrap();
        assert_eq!(b.keys("user:").unwrap(), ["user:b"]);

        let other = open("counters").unwrap();
        assert_eq!(other.get("n").unwrap(), None, "buckets are apart");
        let err: crate::Error = b.get("").unwrap_err().into();
        assert!(matches!(err, crate::Error::Failed(_)));
    }
}
