//! `optech dev`: rebuild a plugin when its sources change, so saving a source
//! file reaches the running host (the build renames the new `.wasm` into place
//! and hot reload picks it up); and build a plugin folder that appears while it
//! runs (`optech new` in another terminal). Any language `build` knows.
//!
//! Invariant: only what the plugin's builder calls its sources triggers a
//! build; the `.wasm` files the builds write, and build output, never do.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use crate::build::{self, BuildDirs, PluginSource};

/// Quiet time before rebuilding: editors often write a file in several steps.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

/// One `optech dev` build at a time: a rebuild on save and the first build of a
/// plugin the config does not serve would otherwise write the same staging
/// file, or install one language's toolchain twice at once.
static BUILDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for the builds under way to end; builds nothing else until dropped.
pub fn one_build_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    BUILDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps the source watcher alive; dropping it stops watching.
pub struct SourceWatch {
    _debouncer: Box<dyn std::any::Any + Send>,
    _task: tokio::task::JoinHandle<()>,
}

/// Watches the plugin folders under `plugins_dir` (and the folder itself, for
/// new ones) and rebuilds a plugin when one of its sources changes.
pub fn watch_sources(plugins_dir: &Path, dirs: BuildDirs) -> anyhow::Result<SourceWatch> {
    // Events carry absolute paths: compare against absolute plugin directories.
    let root = std::fs::canonicalize(plugins_dir).unwrap_or_else(|_| plugins_dir.to_path_buf());
    let mut known: BTreeSet<PathBuf> = plugins_in(&root).into_iter().map(|k| k.dir).collect();
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
            let dirty: Vec<PluginSource> = plugins_in(&root)
                .into_iter()
                .filter(|p| {
                    let new = !known.contains(&p.dir);
                    new || changed.iter().any(|path| p.is_source(path))
                })
                .collect();
            for plugin in dirty {
                let first_time = known.insert(plugin.dir.clone());
                let (dirs, out) = (dirs.clone(), out_dir.clone());
                let name = plugin.name.clone();
                let language = plugin.language();
                if first_time {
                    tracing::info!(plugin = %name, language, "new plugin; building it");
                } else {
                    tracing::info!(plugin = %name, language, "sources changed; rebuilding");
                }
                let build = move || {
                    let _alone = one_build_at_a_time();
                    build::build(&plugin, &dirs, &out)
                };
                match tokio::task::spawn_blocking(build).await {
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

/// The plugins directly under `root`, with absolute directories.
fn plugins_in(root: &Path) -> Vec<PluginSource> {
    let mut plugins = build::discover(root).unwrap_or_default();
    for plugin in &mut plugins {
        plugin.dir = std::fs::canonicalize(&plugin.dir).unwrap_or_else(|_| plugin.dir.clone());
    }
    plugins
}
