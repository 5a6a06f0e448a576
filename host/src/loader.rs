//! Turns a validated config into loaded plugins: read, hash, compile, check.
//!
//! Invariant: compiling is CPU-heavy and runs on the blocking pool, never on
//! an async worker that serves requests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::{Config, PluginConfig};
use crate::dispatch::Plugin;
use crate::runtime::{LoadError, Runtime, WasmHandler};

/// A plugin that could not be loaded, with the file it came from.
#[derive(Debug, Error)]
pub enum PluginLoadError {
    #[error("plugin `{name}`: cannot read {}: {source}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin `{name}` ({}): {source}", path.display())]
    Invalid {
        name: String,
        path: PathBuf,
        source: LoadError,
    },
    #[error("plugin `{name}`: the compile task failed: {message}")]
    Task { name: String, message: String },
}

/// Hex SHA-256 of a component's bytes: its version, as shown by `/healthz`.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Loads one plugin from its `source` file. If `previous` has the same bytes and
/// settings it is returned as is: unchanged plugins are never rebuilt.
pub async fn load_plugin(
    runtime: &Runtime,
    settings: &PluginConfig,
    previous: Option<&Arc<Plugin>>,
) -> Result<Arc<Plugin>, PluginLoadError> {
    let name = settings.name.clone();
    let path = settings.source.clone();
    let read_path = path.clone();
    let read = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&read_path)?;
        let sha256 = content_hash(&bytes);
        Ok::<_, std::io::Error>((bytes, sha256))
    })
    .await
    .map_err(|e| PluginLoadError::Task {
        name: name.clone(),
        message: e.to_string(),
    })?;
    let (bytes, sha256) = read.map_err(|source| PluginLoadError::Read {
        name: name.clone(),
        path: path.clone(),
        source,
    })?;
    if let Some(previous) = previous.filter(|p| p.sha256 == sha256 && p.settings == *settings) {
        return Ok(previous.clone());
    }
    let task_runtime = runtime.clone();
    let task_settings = settings.clone();
    let task_sha = sha256.clone();
    let handler = tokio::task::spawn_blocking(move || {
        WasmHandler::load(&task_runtime, &task_settings, &bytes, &task_sha)
    })
    .await
    .map_err(|e| PluginLoadError::Task {
        name: name.clone(),
        message: e.to_string(),
    })?
    .map_err(|source| PluginLoadError::Invalid { name, path, source })?;
    Ok(Arc::new(Plugin::new(
        settings.clone(),
        Arc::new(handler),
        sha256,
        runtime.metrics(),
    )))
}

/// Loads every plugin the config maps a key to; all errors are reported together.
pub async fn load_all(
    runtime: &Runtime,
    config: &Config,
) -> Result<BTreeMap<String, Arc<Plugin>>, Vec<PluginLoadError>> {
    let tasks: Vec<_> = config
        .plugins
        .values()
        .map(|settings| {
            let runtime = runtime.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                (
                    settings.name.clone(),
                    load_plugin(&runtime, &settings, None).await,
                )
            })
        })
        .collect();
    let mut plugins = BTreeMap::new();
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok((name, Ok(plugin))) => {
                plugins.insert(name, plugin);
            }
            Ok((_, Err(e))) => errors.push(e),
            Err(e) => errors.push(PluginLoadError::Task {
                name: "?".into(),
                message: e.to_string(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(plugins)
    } else {
        Err(errors)
    }
}
