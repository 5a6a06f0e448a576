//! What the host pulled, kept under `<data_dir>/registry/`: layers by digest
//! (`blobs/sha256/<hex>`) and, per reference, the digests it last resolved to
//! and served (`refs/<sha256 of the reference>.json`, written once the build
//! serves), so a host whose registry is down at start-up serves what it
//! served before, never a version it refused.
//!
//! Invariants: a blob is written to a temporary file and renamed, so a crash
//! never leaves a partial layer under its digest; a blob is checked against
//! its digest when read, and a damaged one is deleted, never served; a layer
//! no reference points to any more is deleted when a reference moves, so the
//! cache holds one layer per reference.
//!
//! Blocking file I/O: callers run it on the blocking pool.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a reference resolved to when it was last pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub reference: String,
    /// The manifest's digest (what a tag points to).
    pub manifest_digest: String,
    /// The wasm layer's digest: `sha256:` and the component's content hash.
    pub layer_digest: String,
    /// RFC 3339, when the registry last said so.
    pub resolved_at: String,
}

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = sha256_hex(digest)?;
        Some(self.dir.join("blobs").join("sha256").join(hex))
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(reference.as_bytes()));
        self.dir.join("refs").join(format!("{name}.json"))
    }

    /// The layer with `digest`, if it is here and intact.
    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        if format!("sha256:{}", hex::encode(Sha256::digest(&bytes))) == digest {
            Some(bytes)
        } else {
            tracing::warn!(
                "registry cache: {} does not match its digest; deleted",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Keeps a layer whose bytes the caller has checked against `digest`.
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self
            .blob_path(digest)
            .ok_or_else(|| std::io::Error::other(format!("{digest:?} is not a sha256 digest")))?;
        write_atomically(&path, bytes)
    }

    /// What `reference` resolved to when it was last pulled here.
    pub fn resolved(&self, reference: &str) -> Option<Resolved> {
        let text = std::fs::read(self.ref_path(reference)).ok()?;
        serde_json::from_slice::<Resolved>(&text)
            .ok()
            .filter(|r| r.reference == reference)
    }

    /// Records what `resolved.reference` points to now, and deletes the layers
    /// no reference points to any more.
    pub fn remember(&self, resolved: &Resolved) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(resolved).map_err(std::io::Error::other)?;
        write_atomically(&self.ref_path(&resolved.reference), &bytes)?;
        self.collect();
        Ok(())
    }

    /// Deletes every layer no reference file names.
    fn collect(&self) {
        let Ok(refs) = std::fs::read_dir(self.dir.join("refs")) else {
            return;
        };
        let kept: HashSet<String> = refs
            .flatten()
            .filter_map(|entry| std::fs::read(entry.path()).ok())
            .filter_map(|text| serde_json::from_slice::<Resolved>(&text).ok())
            .filter_map(|r| sha256_hex(&r.layer_digest).map(str::to_string))
            .collect();
        let Ok(blobs) = std::fs::read_dir(self.dir.join("blobs").join("sha256")) else {
            return;
        };
        for entry in blobs.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hex64(&name) && !kept.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The hex of a `sha256:<64 hex>` digest.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    digest.strip_prefix("sha256:").filter(|hex| is_hex64(hex))
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile_in(dir)?;
    file.1.write_all(bytes)?;
    file.1.sync_all()?;
    std::fs::rename(&file.0, path)
}

/// A new file beside the target, named so no two writers share it.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = format!(
        ".partial-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    fn resolved(reference: &str, layer: &[u8]) -> Resolved {
        Resolved {
            reference: reference.into(),
            manifest_digest: digest(reference.as_bytes()),
            layer_digest: digest(layer),
            resolved_at: "2026-12-06T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_reference_keeps_its_last_layer_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::new(dir.path());
        let (v1, v2) = (b"version one".as_slice(), b"version two".as_slice());
        cache.put_blob(&digest(v1), v1).expect("put");
        cache
            .remember(&resolved("r.example/a:live", v1))
            .expect("remember");
        assert_eq!(cache.blob(&digest(v1)).as_deref(), Some(v1));
        assert_eq!(
            cache.resolved("r.example/a:live"),
            Some(resolved("r.example/a:live", v1))
        );
        assert_eq!(cache.resolved("r.example/a:other"), None);

        cache.put_blob(&digest(v2), v2).expect("put");
        cache
            .remember(&resolved("r.example/a:live", v2))
            .expect("remember");
        assert_eq!(cache.blob(&digest(v1)), None, "the old layer is collected");
        assert_eq!(cache.blob(&digest(v2)).as_deref(), Some(v2));
    }

    #[test]
    fn a_damaged_blob_is_never_served() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::new(dir.path());
        let bytes = b"component bytes";
        cache.put_blob(&digest(bytes), bytes).expect("put");
        let path = cache.blob_path(&digest(bytes)).expect("a digest");
        std::fs::write(&path, b"something else").expect("overwrite");
        assert_eq!(cache.blob(&digest(bytes)), None);
        assert!(!path.exists(), "the damaged file is deleted");
        assert!(cache.put_blob("md5:abc", bytes).is_err());
    }
}
