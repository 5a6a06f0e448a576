//! `optech dev`: rebuild a plugin crate when its sources change, so saving a
//! `.rs` file reaches the running host (the build renames the new `.wasm` into
//! place and hot reload picks it up); and build a crate that appears while it
//! runs (`optech new` in another terminal).
//!
//! Invariant: only a crate's `src/` and `Cargo.toml` count as its sources; the
//! `.wasm` files the builds write, and build output, never trigger a build.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use crate::plugin_build::{self, PluginCrate};

/// Quiet time before rebuilding: editors often write a file in several steps.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

/// Keeps the source watcher alive; dropping it stops watching.
pub struct SourceWatch {
    _debouncer: Box<dyn std::any::Any + Send>,
    _task: tokio::task::JoinHandle<()>,
}

/// Watches the plugin crates under `plugins_dir` (and the folder itself, for
/// new ones) and rebuilds a crate when its `src/` or `Cargo.toml` changes.
pub fn watch_sources(plugins_dir: &Path, target_dir: PathBuf) -> anyhow::Result<SourceWatch> {
    // Events carry absolute paths: compare against absolute crate directories.
    let root = std::fs::canonicalize(plugins_dir).unwrap_or_else(|_| plugins_dir.to_path_buf());
    let mut known: BTreeSet<PathBuf> = crates_in(&root).into_iter().map(|k| k.dir).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        for path in events
            .iter()
            .filter(|e| !e.kind.is_access())
            .flat_map(|e| e.paths.iter().cloned())
        {
            let _ = tx.send(path);
        }
    })?;
    debouncer.watch(&root, RecursiveMode::Recursive)?;
    let out_dir = plugins_dir.to_path_buf();
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = BTreeSet::from([first]);
            while let Ok(path) = rx.try_recv() {
                changed.insert(path);
            }
            let crates = crates_in(&root);
            let dirty: Vec<PluginCrate> = crates
                .into_iter()
                .filter(|k| {
                    let new = !known.contains(&k.dir);
                    new || changed.iter().any(|p| is_source_of(p, &k.dir))
                })
                .collect();
            for krate in dirty {
                let first_time = known.insert(krate.dir.clone());
                let (target, out) = (target_dir.clone(), out_dir.clone());
                let name = krate.name.clone();
                if first_time {
                    tracing::info!(plugin = %name, "new plugin crate; building it");
                } else {
                    tracing::info!(plugin = %name, "sources changed; rebuilding");
                }
                match tokio::task::spawn_blocking(move || {
                    plugin_build::build(&krate, &target, &out)
                })
                .await
                {
                    Ok(Ok(path)) => tracing::info!(plugin = %name, "built {}", path.display()),
                    Ok(Err(e)) => {
                        tracing::warn!(plugin = %name, "build failed, the last good version keeps serving: {e:#}")
                    }
                    Err(e) => tracing::warn!(plugin = %name, "build task failed: {e}"),
                }
            }
        }
    });
    Ok(SourceWatch {
        _debouncer: Box::new(debouncer),
        _task: task,
    })
}

/// The plugin crates directly under `root`, with absolute directories.
fn crates_in(root: &Path) -> Vec<PluginCrate> {
    let mut crates = plugin_build::discover(root).unwrap_or_default();
    for krate in &mut crates {
        krate.dir = std::fs::canonicalize(&krate.dir).unwrap_or_else(|_| krate.dir.clone());
    }
    crates
}

/// Whether `path` is one of the crate's sources: under `src/`, or its manifest.
fn is_source_of(path: &Path, crate_dir: &Path) -> bool {
    path.starts_with(crate_dir.join("src")) || path == crate_dir.join("Cargo.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_src_and_the_manifest_are_sources() {
        let dir = Path::new("/p/echo");
        assert!(is_source_of(Path::new("/p/echo/src/lib.rs"), dir));
        assert!(is_source_of(Path::new("/p/echo/Cargo.toml"), dir));
        assert!(!is_source_of(Path::new("/p/echo/target/x"), dir));
        assert!(!is_source_of(Path::new("/p/echo.wasm"), dir));
        assert!(!is_source_of(Path::new("/p/echo2/src/lib.rs"), dir));
    }
}
