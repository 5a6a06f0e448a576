//! Turns a validated config into loaded plugins: read (a file, or from a
//! registry through `registry`), hash, compile, check.
//!
//! Invariant: compiling is CPU-heavy and runs on the blocking pool, never on
//! an async worker that serves requests. A registry plugin's content hash is
//! its layer digest, so the compile cache keys on the digest it was pulled by.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::{Config, OciSource, PluginConfig, Source};
use crate::dispatch::Plugin;
use crate::registry::{Fetched, Registry, RegistryError};
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
    #[error("plugin `{name}` (oci:{reference}): {source}")]
    Registry {
        name: String,
        reference: String,
        source: RegistryError,
    },
    #[error("plugin `{name}` (oci:{reference}): {source}")]
    InvalidArtifact {
        name: String,
        reference: String,
        source: LoadError,
    },
    #[error("plugin `{name}`: the compile task failed: {message}")]
    Task { name: String, message: String },
}

/// Hex SHA-256 of a component's bytes: its version, as shown by `/healthz`.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Loads one plugin from its `source`. If `previous` has the same bytes and
/// settings it is returned as is: unchanged plugins are never rebuilt.
pub async fn load_plugin(
    runtime: &Runtime,
    registry: &Registry,
    settings: &PluginConfig,
    previous: Option<&Arc<Plugin>>,
) -> Result<Arc<Plugin>, PluginLoadError> {
    match &settings.source {
        Source::File(path) => load_file(runtime, settings, path, previous).await,
        Source::Oci(oci) => load_oci(runtime, registry, settings, oci, previous).await,
    }
}

async fn load_file(
    runtime: &Runtime,
    settings: &PluginConfig,
    path: &std::path::Path,
    previous: Option<&Arc<Plugin>>,
) -> Result<Arc<Plugin>, PluginLoadError> {
    let name = settings.name.clone();
    let path = path.to_path_buf();
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
    compile(runtime, settings, bytes, sha256)
        .await?
        .map_err(|source| PluginLoadError::Invalid { name, path, source })
}

/// A registry plugin: the reference resolved, the layer pulled (or taken from
/// the cache), and compiled unless `previous` already runs that layer.
async fn load_oci(
    runtime: &Runtime,
    registry: &Registry,
    settings: &PluginConfig,
    oci: &OciSource,
    previous: Option<&Arc<Plugin>>,
) -> Result<Arc<Plugin>, PluginLoadError> {
    let name = settings.name.clone();
    let reusable = previous.filter(|p| p.settings == *settings);
    let running = reusable.map(|p| format!("sha256:{}", p.sha256));
    let fetched = registry
        .fetch(&name, oci, running.as_deref())
        .await
        .map_err(|source| PluginLoadError::Registry {
            name: name.clone(),
            reference: oci.reference.clone(),
            source,
        })?;
    let (bytes, resolved, offline) = match fetched {
        Fetched::Unchanged { resolved, offline } => {
            if let Some(previous) = reusable {
                registry.serving(&name, oci, &resolved, offline).await;
                return Ok(previous.clone());
            }
            // Only returned for a running layer; unreachable without one.
            return Err(PluginLoadError::Task {
                name,
                message: "the registry answered for a plugin that is not running".into(),
            });
        }
        Fetched::Bytes {
            bytes,
            resolved,
            offline,
        } => (bytes, resolved, offline),
    };
    let sha256 = content_hash(&bytes);
    let plugin = match compile(runtime, settings, bytes, sha256).await? {
        Ok(plugin) => plugin,
        Err(source) => {
            registry.reject(&name, oci, &resolved, &source.to_string());
            return Err(PluginLoadError::InvalidArtifact {
                name,
                reference: oci.reference.clone(),
                source,
            });
        }
    };
    registry.serving(&name, oci, &resolved, offline).await;
    Ok(plugin)
}

/// Compiles and checks a component on the blocking pool. The outer error is
/// the task's; the inner one the component's.
async fn compile(
    runtime: &Runtime,
    settings: &PluginConfig,
    bytes: Vec<u8>,
    sha256: String,
) -> Result<Result<Arc<Plugin>, LoadError>, PluginLoadError> {
    let task_runtime = runtime.clone();
    let task_settings = settings.clone();
    let task_sha = sha256.clone();
    let handler = tokio::task::spawn_blocking(move || {
        WasmHandler::load(&task_runtime, &task_settings, &bytes, &task_sha)
    })
    .await
    .map_err(|e| PluginLoadError::Task {
        name: settings.name.clone(),
        message: e.to_string(),
    })?;
    Ok(handler.map(|handler| {
        Arc::new(Plugin::new(
            settings.clone(),
            Arc::new(handler),
            sha256,
            runtime.metrics(),
        ))
    }))
}

/// Loads every plugin the config maps a key to; all errors are reported together.
pub async fn load_all(
    runtime: &Runtime,
    registry: &Registry,
    config: &Config,
) -> Result<BTreeMap<String, Arc<Plugin>>, Vec<PluginLoadError>> {
    let tasks: Vec<_> = config
        .plugins
        .values()
        .map(|settings| {
            let runtime = runtime.clone();
            let registry = registry.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                (
                    settings.name.clone(),
                    load_plugin(&runtime, &registry, &settings, None).await,
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
