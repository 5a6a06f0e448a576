//! `optech dev`: rebuild a plugin crate when its sources change, so saving a
//! `.rs` file reaches the running host (the build renames the new `.wasm` into
//! place and hot reload picks it up).

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

/// Watches every plugin crate under `plugins_dir` and rebuilds the ones whose
/// `src/` or `Cargo.toml` change.
pub fn watch_sources(plugins_dir: &Path, target_dir: PathBuf) -> anyhow::Result<SourceWatch> {
    let mut crates = plugin_build::discover(plugins_dir)?;
    // Events carry absolute paths: compare against absolute crate directories.
    for krate in &mut crates {
        krate.dir = std::fs::canonicalize(&krate.dir).unwrap_or_else(|_| krate.dir.clone());
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        for path in events
            .iter()
            .filter(|e| !e.kind.is_access())
            .flat_map(|e| e.paths.iter().cloned())
        {
            tracing::debug!("source changed: {}", path.display());
            let _ = tx.send(path);
        }
    })?;
    for krate in &crates {
        debouncer.watch(krate.dir.join("src"), RecursiveMode::Recursive)?;
        debouncer.watch(krate.dir.join("Cargo.toml"), RecursiveMode::NonRecursive)?;
    }
    let out_dir = plugins_dir.to_path_buf();
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = BTreeSet::from([first]);
            while let Ok(path) = rx.try_recv() {
                changed.insert(path);
            }
            let dirty: Vec<PluginCrate> = crates
                .iter()
                .filter(|k| changed.iter().any(|p| p.starts_with(&k.dir)))
                .cloned()
                .collect();
            for krate in dirty {
                let (target, out) = (target_dir.clone(), out_dir.clone());
                let name = krate.name.clone();
                tracing::info!(plugin = %name, "sources changed; rebuilding");
                match tokio::task::spawn_blocking(move || {
                    plugin_build::build(&krate, &target, &out)
                })
                .await
                {
                    Ok(Ok(path)) => tracing::info!(plugin = %name, "rebuilt {}", path.display()),
                    Ok(Err(e)) => {
                        tracing::warn!(plugin = %name, "rebuild failed, the last good version keeps serving: {e:#}")
                    }
                    Err(e) => tracing::warn!(plugin = %name, "rebuild task failed: {e}"),
                }
            }
        }
    });
    Ok(SourceWatch {
        _debouncer: Box::new(debouncer),
        _task: task,
    })
}
