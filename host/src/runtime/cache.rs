//! Compiled components, kept so the same bytes are never compiled twice: in
//! memory by content hash (a reload that changes only settings, or rolls back,
//! does not recompile) and on disk (a restart skips Cranelift). Beside them,
//! Cranelift's incremental cache ([`FunctionCache`]): compiled functions by the
//! hash of their code, so a new component that shares most of its functions
//! with one compiled before (a JavaScript or Python plugin: the same engine,
//! another script) compiles only what is new.
//!
//! Invariants: a disk entry is named by the content hash and the engine's
//! compatibility hash, so no engine ever loads another's code; an entry that
//! does not load is deleted and recompiled, never trusted; the directory never
//! holds more than its cap for long: after each write the least recently used
//! files (by modification time, refreshed on every hit) are removed.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{CacheStore, Engine};

/// Compiled components no longer live that are kept for a quick rollback.
pub const RETIRED_KEPT: usize = 8;

/// Compiled components by content hash, with a use counter for trimming.
#[derive(Default)]
pub(super) struct ComponentCache {
    entries: HashMap<String, (Component, u64)>,
    clock: u64,
}

impl ComponentCache {
    pub(super) fn get(&mut self, sha256: &str) -> Option<Component> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(sha256).map(|(component, used)| {
            *used = clock;
            component.clone()
        })
    }

    pub(super) fn insert(&mut self, sha256: &str, component: Component) {
        self.clock += 1;
        self.entries
            .insert(sha256.to_string(), (component, self.clock));
    }

    /// Keeps the components in `live` and the [`RETIRED_KEPT`] most recently used others.
    pub(super) fn trim(&mut self, live: &HashSet<&str>) {
        let mut retired: Vec<(u64, String)> = self
            .entries
            .iter()
            .filter(|(hash, _)| !live.contains(hash.as_str()))
            .map(|(hash, (_, used))| (*used, hash.clone()))
            .collect();
        retired.sort_unstable_by_key(|(used, _)| std::cmp::Reverse(*used));
        for (_, hash) in retired.into_iter().skip(RETIRED_KEPT) {
            self.entries.remove(&hash);
        }
    }
}

/// Compiled components on disk, so a restart skips Cranelift.
pub(super) struct DiskCache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash (wasmtime version, target and
    /// settings) and of the dense image size, which shapes the compiled
    /// memory images but is not in that hash. A different engine never reads
    /// another's files.
    engine_tag: String,
    max_bytes: u64,
}

impl DiskCache {
    pub(super) fn new(dir: PathBuf, engine: &Engine, max_bytes: u64) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        engine
            .get_memory_guaranteed_dense_image_size()
            .hash(&mut hasher);
        let cache = Self {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
            max_bytes,
        };
        // A lowered cap applies from the start, not only at the next write.
        cache.evict(None);
        cache
    }

    pub(super) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<Component> {
        let path = self.dir.join(format!("{sha256}-{}.cwasm", self.engine_tag));
        // Read into memory rather than `deserialize_file`'s mmap: a cache file
        // changed in place later must not be able to fault live code (SIGBUS).
        if let Ok(cached) = std::fs::read(&path) {
            // SAFETY: the file was written by `store` below from bytes whose hash is
            // in its name, for an engine with the same compatibility hash; it lives
            // in the host's own data directory, which is as trusted as its binary.
            // wasmtime still checks the header and engine settings on load.
            match unsafe { Component::deserialize(engine, &cached) } {
                Ok(component) => {
                    touch(&path);
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(
                        "ignoring unusable compile cache entry {}: {e:#}",
                        path.display()
                    );
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        match self.store(&component, &path) {
            Ok(()) => self.evict(Some(&path)),
            Err(e) => tracing::warn!("cannot write the compile cache {}: {e:#}", path.display()),
        }
        Ok(component)
    }

    fn store(&self, component: &Component, path: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let staging = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&staging, bytes)?;
        std::fs::rename(&staging, path)?;
        Ok(())
    }

    /// Removes the least recently used `.cwasm` files until the directory holds
    /// at most `max_bytes`; `keep` (the file just written) is never removed.
    fn evict(&self, keep: Option<&Path>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_bytes {
            return;
        }
        files.sort_by_key(|(modified, _, _)| *modified);
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if Some(path.as_path()) == keep {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    tracing::debug!("compile cache over its cap: removed {}", path.display());
                }
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }
}

/// Cranelift's incremental cache on disk: `<dir>/<2 hex>/<62 hex>` files, one
/// per compiled function, named by the hash of Cranelift's key (which covers
/// the function's IR and the compiler's settings).
///
/// Invariant: it never holds much more than its cap: when an insert would pass
/// it, the folder is emptied and filled again (functions in use are written
/// back by the next compile). Entries are trusted as the `.cwasm` files are:
/// they live in the host's own data directory.
#[derive(Debug)]
pub(super) struct FunctionCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes in the folder, counted at start and on every insert.
    bytes: AtomicU64,
}

impl FunctionCache {
    pub(super) fn new(dir: PathBuf, max_bytes: u64) -> Self {
        let bytes = folder_bytes(&dir);
        let cache = Self {
            dir,
            max_bytes,
            bytes: AtomicU64::new(bytes),
        };
        if bytes > max_bytes {
            cache.clear();
        }
        cache
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let name = hex::encode(Sha256::digest(key));
        self.dir.join(&name[..2]).join(&name[2..])
    }

    fn clear(&self) {
        tracing::debug!(
            "function cache over its cap: emptying {}",
            self.dir.display()
        );
        let _ = std::fs::remove_dir_all(&self.dir);
        self.bytes.store(0, Ordering::Relaxed);
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        std::fs::read(self.path(key)).ok().map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let len = value.len() as u64;
        if self.bytes.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.clear();
            self.bytes.fetch_add(len, Ordering::Relaxed);
        }
        let path = self.path(key);
        let Some(parent) = path.parent() else {
            return false;
        };
        // Written beside, then renamed: a reader never sees half an entry.
        let staging = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::write(&staging, &value))
            .and_then(|()| std::fs::rename(&staging, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&staging);
        }
        written.is_ok()
    }
}

/// Bytes of the files under `dir`, one level of subfolders deep.
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_dir(e.path()).ok())
        .flat_map(|files| files.filter_map(Result::ok))
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Marks a cache file as just used.
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The smallest valid component: it exports nothing, and compiles.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn cwasm_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cwasm"))
            .collect();
        names.sort();
        names
    }

    fn age(path: &Path, secs_ago: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
            .unwrap();
    }

    #[test]
    fn the_function_cache_gives_back_what_it_got_and_stays_under_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FunctionCache::new(dir.path().join("functions"), 100);
        assert!(cache.get(b"k1").is_none());
        assert!(cache.insert(b"k1", vec![1; 60]));
        assert_eq!(cache.get(b"k1").as_deref(), Some(&[1u8; 60][..]));
        // Past the cap, the folder starts over with the new entry.
        assert!(cache.insert(b"k2", vec![2; 60]));
        assert!(cache.get(b"k1").is_none());
        assert_eq!(cache.get(b"k2").as_deref(), Some(&[2u8; 60][..]));
        // Counted again at start: a lower cap empties it.
        assert_eq!(folder_bytes(&dir.path().join("functions")), 60);
        let smaller = FunctionCache::new(dir.path().join("functions"), 10);
        assert!(smaller.get(b"k2").is_none());
    }

    #[test]
    fn engines_that_lay_out_memory_images_differently_do_not_share_files() {
        // The dense image size is not in wasmtime's compatibility hash, but
        // it decides whether a compiled module has a copy-on-write image.
        let dir = tempfile::tempdir().unwrap();
        let tag = |size: u64| {
            let mut config = wasmtime::Config::new();
            config.memory_guaranteed_dense_image_size(size);
            let engine = Engine::new(&config).unwrap();
            DiskCache::new(dir.path().to_path_buf(), &engine, u64::MAX).engine_tag
        };
        assert_eq!(tag(16 << 20), tag(16 << 20));
        assert_ne!(tag(16 << 20), tag(64 << 20));
    }

    #[test]
    fn the_cache_is_capped_and_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let probe = DiskCache::new(dir.path().to_path_buf(), &engine, u64::MAX);
        probe
            .load_or_compile(&engine, EMPTY_COMPONENT, "probe")
            .unwrap();
        let path_of = |hash: &str| {
            dir.path()
                .join(format!("{hash}-{}.cwasm", probe.engine_tag))
        };
        let entry = std::fs::metadata(path_of("probe")).unwrap().len();
        std::fs::remove_file(path_of("probe")).unwrap();

        // Room for three entries.
        let cache = DiskCache::new(dir.path().to_path_buf(), &engine, entry * 3 + entry / 2);
        for (i, hash) in ["a", "b", "c"].iter().enumerate() {
            cache
                .load_or_compile(&engine, EMPTY_COMPONENT, hash)
                .unwrap();
            age(&path_of(hash), 100 - i as u64 * 10);
        }
        assert_eq!(cwasm_files(dir.path()).len(), 3);
        // A hit makes `a` the most recently used; `b` is now the oldest.
        cache
            .load_or_compile(&engine, EMPTY_COMPONENT, "a")
            .unwrap();
        cache
            .load_or_compile(&engine, EMPTY_COMPONENT, "d")
            .unwrap();
        let left = cwasm_files(dir.path());
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(!left.iter().any(|n| n.starts_with("b-")), "{left:?}");
        for kept in ["a-", "c-", "d-"] {
            assert!(
                left.iter().any(|n| n.starts_with(kept)),
                "{kept} in {left:?}"
            );
        }

        // A cap lowered between runs applies at start.
        DiskCache::new(dir.path().to_path_buf(), &engine, entry);
        assert_eq!(cwasm_files(dir.path()).len(), 1);
    }
}
