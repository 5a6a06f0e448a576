//! Hot reload: watch the config file and the plugin files, rebuild what
//! changed off the request path, and swap the routing table in one step.
//!
//! Invariants:
//! - the last good version keeps serving when a change is bad (half-written or
//!   invalid file, config error); the reason is logged once per distinct problem;
//! - unchanged plugins (same bytes, same settings) are reused, never rebuilt;
//! - requests in flight finish on the version they started with (they hold an
//!   `Arc<Plugin>`); new requests see the new table as soon as it is swapped;
//! - a `.wasm` that disappears while the config still maps it keeps its last
//!   good version (with a warning); a key removed from the config stops routing;
//! - a registry plugin whose tag moved (`refresh`) is reloaded the same way: a
//!   failed pull or a digest mismatch keeps the version serving.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use serde::Serialize;

use crate::config::{Config, OciSource};
use crate::dispatch::Plugin;
use crate::loader;
use crate::metrics::OutcomeLabels;
use crate::registry::Registry;
use crate::router::{Router, Routes};
use crate::runtime::Runtime;

/// How long the file system must be quiet before a batch of changes is acted on.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// What `/healthz` shows about reloading.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReloadStatus {
    /// When the routing table was last rebuilt from disk.
    pub last_reload_at: Option<String>,
    /// Problems with the files on disk right now (empty when all is well).
    pub problems: Vec<String>,
    /// The most recent problem ever seen, with when, even if since fixed.
    pub last_error: Option<ReloadError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadError {
    pub at: String,
    pub message: String,
}

/// What the host runs now, and what it was built from.
struct Live {
    config: Config,
    plugins: BTreeMap<String, Arc<Plugin>>,
}

pub struct Reloader {
    config_path: PathBuf,
    runtime: Runtime,
    registry: Registry,
    router: Arc<Router>,
    live: tokio::sync::Mutex<Live>,
    status: Arc<Mutex<ReloadStatus>>,
}

impl Reloader {
    pub fn new(
        config: Config,
        plugins: BTreeMap<String, Arc<Plugin>>,
        runtime: Runtime,
        registry: Registry,
        router: Arc<Router>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config_path: config.path.clone(),
            runtime,
            registry,
            router,
            live: tokio::sync::Mutex::new(Live { config, plugins }),
            status: Arc::default(),
        })
    }

    /// The registry client, whose status the console shows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The status shown by `/healthz`.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the config and every plugin file, rebuilds what changed and swaps
    /// the routing table. Returns the problems found (the last good versions stay).
    pub async fn reload(&self) -> Vec<String> {
        let mut live = self.live.lock().await;
        let mut problems = Vec::new();
        let config = match Config::load(&self.config_path) {
            Ok(config) => {
                if !same_server(&config, &live.config) {
                    problems.push(format!(
                        "{}: changes to [server] take effect after a restart",
                        self.config_path.display()
                    ));
                }
                config
            }
            Err(e) => {
                problems.push(format!("{e}; keeping the last good config"));
                live.config.clone()
            }
        };

        let mut plugins = BTreeMap::new();
        for settings in config.plugins.values() {
            let previous = live.plugins.get(&settings.name);
            match loader::load_plugin(&self.runtime, &self.registry, settings, previous).await {
                Ok(plugin) => {
                    if previous.is_none_or(|p| !Arc::ptr_eq(p, &plugin)) {
                        tracing::info!(plugin = %settings.name, sha256 = %&plugin.sha256[..12], "loaded");
                    }
                    plugins.insert(settings.name.clone(), plugin);
                }
                Err(e) => match previous {
                    Some(previous) => {
                        problems.push(format!(
                            "{e}; keeping the last good version ({})",
                            &previous.sha256[..12]
                        ));
                        plugins.insert(settings.name.clone(), previous.clone());
                    }
                    None => problems.push(format!("{e}; its keys are not routed")),
                },
            }
        }

        self.router.swap(Routes::new(&config.keys, &plugins));
        let from_registries: Vec<&str> = config
            .plugins
            .values()
            .filter(|p| p.source.oci().is_some())
            .map(|p| p.name.as_str())
            .collect();
        self.registry.retain(&from_registries);
        let hashes: HashSet<&str> = plugins.values().map(|p| p.sha256.as_str()).collect();
        self.runtime.retain_components(&hashes);
        live.config = config;
        live.plugins = plugins;
        drop(live);
        self.record(&problems);
        let outcome = if problems.is_empty() { "ok" } else { "failed" };
        self.runtime
            .metrics()
            .reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        problems
    }

    /// Logs each problem once (until it goes away) and updates the status.
    fn record(&self, problems: &[String]) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let before: BTreeSet<&String> = status.problems.iter().collect();
        for problem in problems.iter().filter(|p| !before.contains(p)) {
            tracing::warn!("reload: {problem}");
        }
        if let Some(last) = problems.last() {
            status.last_error = Some(ReloadError {
                at: now.clone(),
                message: last.clone(),
            });
        }
        status.problems = problems.to_vec();
        status.last_reload_at = Some(now);
    }

    /// Watches the config file and the plugin files; reloads on every change.
    /// Stops when the returned handle is dropped.
    pub async fn watch(self: &Arc<Self>) -> anyhow::Result<WatchHandle> {
        let (dirs, config_file) = {
            let live = self.live.lock().await;
            watched(&live.config)
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let config_name = config_file.clone();
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
            let Ok(events) = result else { return };
            // Reads (including the reloader's own) are not changes; a close after
            // writing is, as it ends a plain copy.
            let relevant = events
                .iter()
                .filter(|e| match e.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) => false,
                    _ => true,
                })
                .flat_map(|e| e.paths.iter())
                .any(|path| {
                    path.extension().is_some_and(|ext| ext == "wasm")
                        || path.file_name() == config_name.file_name()
                });
            if relevant {
                let _ = tx.send(());
            }
        })?;
        for dir in &dirs {
            if let Err(e) = debouncer.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {} for changes: {e}", dir.display());
            }
        }
        let reloader = self.clone();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Coalesce a burst of notifications into one reload.
                while rx.try_recv().is_ok() {}
                reloader.reload().await;
            }
        });
        tracing::info!(
            "watching {} for changes",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(WatchHandle {
            _debouncer: Mutex::new(Box::new(debouncer)),
            task,
        })
    }
}

impl Reloader {
    /// Asks the registry, for each plugin whose tag has a `refresh`, whether
    /// the tag moved, each on its own period; reloads when one did. Stops when
    /// the returned handle is dropped.
    pub fn refresh_registries(self: &Arc<Self>) -> RefreshHandle {
        let reloader = self.clone();
        RefreshHandle(tokio::spawn(async move {
            let mut next: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
            loop {
                let due: Vec<(String, OciSource)> = {
                    let live = reloader.live.lock().await;
                    refreshed(&live.config)
                };
                let now = tokio::time::Instant::now();
                next.retain(|name, _| due.iter().any(|(n, _)| n == name));
                let mut moved = false;
                for (name, source) in &due {
                    let period = source.refresh.unwrap_or(IDLE_REFRESH_CHECK);
                    let at = *next.entry(name.clone()).or_insert(now + period);
                    if at <= now {
                        next.insert(name.clone(), now + period);
                        moved |= reloader.registry.moved(name, source).await;
                    }
                }
                if moved {
                    reloader.reload().await;
                }
                let wake = next
                    .values()
                    .min()
                    .copied()
                    .unwrap_or(now + IDLE_REFRESH_CHECK)
                    .min(tokio::time::Instant::now() + IDLE_REFRESH_CHECK);
                tokio::time::sleep_until(wake).await;
            }
        }))
    }
}

/// How often the refresher looks at the config for plugins to refresh when
/// none is due sooner (a reload may add one).
const IDLE_REFRESH_CHECK: Duration = Duration::from_secs(1);

/// The plugins whose registry tag is refreshed.
fn refreshed(config: &Config) -> Vec<(String, OciSource)> {
    config
        .plugins
        .values()
        .filter_map(|p| {
            let oci = p.source.oci()?;
            oci.refresh.map(|_| (p.name.clone(), oci.clone()))
        })
        .collect()
}

/// Keeps the registry refresher running; dropping it stops it.
pub struct RefreshHandle(tokio::task::JoinHandle<()>);

impl Drop for RefreshHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchHandle {
    _debouncer: Mutex<Box<dyn std::any::Any + Send>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The directories to watch (the config file's and every plugin file's) and the config file.
fn watched(config: &Config) -> (BTreeSet<PathBuf>, PathBuf) {
    let parent = |path: &Path| {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let mut dirs = BTreeSet::new();
    dirs.insert(parent(&config.path));
    dirs.insert(config.server.plugins_dir.clone());
    for path in config.plugins.values().filter_map(|p| p.source.file()) {
        dirs.insert(parent(path));
    }
    dirs.retain(|d| d.is_dir());
    (dirs, config.path.clone())
}

fn same_server(a: &Config, b: &Config) -> bool {
    let (a, b) = (&a.server, &b.server);
    a.listen == b.listen
        && a.admin_listen == b.admin_listen
        && a.plugins_dir == b.plugins_dir
        && a.data_dir == b.data_dir
        && a.max_body == b.max_body
        && a.max_in_flight == b.max_in_flight
        && a.link_ttl == b.link_ttl
        && a.shutdown_grace == b.shutdown_grace
        && a.watch == b.watch
        && a.compile_cache == b.compile_cache
        && a.compile_cache_max == b.compile_cache_max
        && a.keep_resident == b.keep_resident
        && a.outbox_retention == b.outbox_retention
        && a.outbox == b.outbox
        && a.outbox_lease == b.outbox_lease
        && a.tls == b.tls
        && a.admin == b.admin
        && a.registry == b.registry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Environment;

    fn config(server: &str) -> Config {
        let text = format!("[server]\n{server}\n[keys]\n");
        Config::parse_with(
            &text,
            Path::new("/srv/optech.toml"),
            &Environment::from_pairs([]),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn registry_settings_are_server_settings_a_reload_does_not_apply() {
        let before = config("max_artifact_size = \"64MiB\"");
        assert!(same_server(
            &before,
            &config("max_artifact_size = \"64MiB\"")
        ));
        assert!(!same_server(
            &before,
            &config("max_artifact_size = \"8MiB\"")
        ));
        assert!(!same_server(
            &before,
            &config("insecure_registries = [\"127.0.0.1:5000\"]")
        ));
    }
}
