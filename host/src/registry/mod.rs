//! Plugins shipped through OCI registries: `optech push` and `pull`, and the
//! host's fetch of `source = { oci = "..." }` (resolve the reference to a
//! digest, pull the wasm layer, check it, keep it in the cache) and its refresh
//! of a tag.
//!
//! Invariants:
//! - bytes are used only after their SHA-256 matched the layer digest the
//!   manifest names; the manifest is the one the reference resolved to;
//! - a pull is bounded: `max_artifact_size` (declared, announced and streamed),
//!   `pull_timeout` for the whole fetch, `max_concurrent_pulls` downloads at
//!   once over all plugins; a refusal is an error, never a partial plugin;
//! - a registry that cannot be reached gives way to the cache: the digest a
//!   reference last resolved to here is served, and said so; a refusal by the
//!   registry (credentials, unknown tag) or a digest mismatch is an error;
//! - a version refused for what it is (too large, not a component, or its
//!   build does not load) is remembered by its manifest digest: while the tag
//!   still names it, refreshes and reloads of an unchanged plugin neither
//!   download nor compile it again (a digest mismatch is the transfer's or the
//!   registry's fault, not the version's: it is tried again);
//! - the cache records a reference's digest only once its build serves, so a
//!   host restarted while the registry is down never serves a refused version;
//! - no credential is ever logged, recorded or put in an error.
//!
//! It knows nothing of the loader or the reloader: `loader` asks it for bytes,
//! `reload` for whether a tag moved, the console for each plugin's status.

mod artifact;
mod auth;
mod cache;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::Semaphore;

pub use artifact::{CREATED, NotAComponent, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
pub use auth::CredentialSource;
pub use cache::Resolved;

use crate::config::{Login, OciSource, RegistrySettings};
use crate::metrics::{Metrics, RegistryLabels};

/// Connecting to a registry takes at most this (or `pull_timeout`, if shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a registry operation failed. Each kind is a label of
/// `optech_registry_errors_total`.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("{reference:?} is not a registry reference: {message}")]
    BadReference { reference: String, message: String },
    #[error("{registry} cannot be reached: {message}")]
    Unreachable { registry: String, message: String },
    #[error("{reference}: no answer within {limit:?} (pull_timeout)")]
    Timeout { reference: String, limit: Duration },
    #[error("{registry} refused the credentials ({source}); check OPTECH_REGISTRY_USERNAME/OPTECH_REGISTRY_PASSWORD or `docker login {registry}`", source = .credentials.describe())]
    Unauthorized {
        registry: String,
        credentials: CredentialSource,
    },
    #[error("{reference}: not found in the registry")]
    NotFound { reference: String },
    #[error(
        "{reference}: the layer's bytes do not match its digest {expected} (got {actual}); refused"
    )]
    DigestMismatch {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("{reference}: the layer is {size} bytes, over max_artifact_size ({limit} bytes)")]
    TooLarge {
        reference: String,
        size: u64,
        limit: u64,
    },
    #[error("{reference}: {message}")]
    NotWasm { reference: String, message: String },
    #[error("{reference} was never pulled here and the registry cannot be reached ({cause})")]
    NeverPulled { reference: String, cause: String },
    #[error(
        "{reference} names {digest}, which was refused here before; the version serving keeps serving until the tag moves"
    )]
    Rejected { reference: String, digest: String },
    #[error("{reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("the registry cache: {0}")]
    Cache(String),
}

impl RegistryError {
    /// The label this error counts under.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadReference { .. } => "bad_reference",
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Unauthorized { .. } => "unauthorized",
            Self::NotFound { .. } => "not_found",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::TooLarge { .. } => "too_large",
            Self::NotWasm { .. } => "not_wasm",
            Self::NeverPulled { .. } => "never_pulled",
            Self::Rejected { .. } => "rejected",
            Self::Registry { .. } => "registry",
            Self::Cache(_) => "cache",
        }
    }

    /// Whether the registry could not be asked at all (so the cache may answer).
    fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. })
    }

    /// Whether the version itself was refused, so asking again gives the same
    /// answer: its manifest pins the layer's size and media type. (A digest
    /// mismatch is not: a transfer or a repaired blob may end it.)
    fn refuses_the_version(&self) -> bool {
        matches!(self, Self::TooLarge { .. } | Self::NotWasm { .. })
    }
}

/// A component fetched for a plugin.
pub enum Fetched {
    /// The reference resolved to the layer the plugin already runs (or, with
    /// `offline`, the registry could not be asked and the cache names it).
    Unchanged { resolved: Resolved, offline: bool },
    /// New bytes (checked against `resolved.layer_digest`).
    Bytes {
        bytes: Vec<u8>,
        resolved: Resolved,
        /// The registry could not be reached: these are the cached ones.
        offline: bool,
    },
}

/// What `optech push` sent.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest_digest: String,
    pub layer_digest: String,
    pub size: usize,
}

/// A plugin's registry source as the console and `/healthz` show it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    pub reference: String,
    /// The manifest digest of the version serving.
    pub digest: Option<String>,
    pub layer_digest: Option<String>,
    /// When the registry was last asked (RFC 3339).
    pub last_refresh_at: Option<String>,
    /// Seconds between refreshes; `None` when the tag is resolved at load only.
    pub refresh_seconds: Option<u64>,
    /// Serving the cached digest because the registry could not be reached.
    pub offline: bool,
    /// The last failure, until a fetch succeeds.
    pub error: Option<String>,
    /// A version refused (see [`Registry::reject`]): not fetched again while
    /// the tag names it and the plugin is unchanged.
    pub rejected: Option<Rejection>,
}

/// A version refused for what it is, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Its manifest digest.
    pub digest: String,
    pub reason: String,
}

/// The registry client, the cache and each plugin's status. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    settings: RegistrySettings,
    /// `None` for the command line's push and pull, which keep nothing.
    cache: Option<cache::Cache>,
    pulls: Semaphore,
    metrics: Option<Arc<Metrics>>,
    status: Mutex<BTreeMap<String, SourceStatus>>,
}

impl Registry {
    /// A registry client for `settings`; the host's keeps its cache in
    /// `cache_dir` and counts in `metrics`.
    pub fn new(
        settings: &RegistrySettings,
        cache_dir: Option<PathBuf>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, RegistryError> {
        let extra_root_certificates = settings
            .ca
            .iter()
            .flat_map(|bundle| &bundle.certificates)
            .map(|der| Certificate {
                encoding: CertificateEncoding::Der,
                data: der.clone(),
            })
            .collect();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(settings.insecure.clone()),
            extra_root_certificates,
            connect_timeout: Some(CONNECT_TIMEOUT.min(settings.pull_timeout)),
            read_timeout: Some(settings.pull_timeout),
            // A wasm artifact is never a multi-platform index.
            platform_resolver: None,
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| RegistryError::Registry {
            reference: "(client)".into(),
            message: e.to_string(),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                settings: settings.clone(),
                cache: cache_dir.map(cache::Cache::new),
                pulls: Semaphore::new(settings.max_concurrent_pulls.max(1)),
                metrics,
                status: Mutex::default(),
            }),
        })
    }

    fn login(&self) -> Option<&Login> {
        self.inner.settings.login.as_ref()
    }

    /// Pushes `wasm` as a wasm OCI artifact under `reference`, with the
    /// manifest `annotations` (`org.opencontainers.image.source`, ...).
    pub async fn push(
        &self,
        reference: &str,
        wasm: Vec<u8>,
        annotations: BTreeMap<String, String>,
    ) -> Result<Pushed, RegistryError> {
        let parsed = parse(reference)?;
        let summary = artifact::summarize(&wasm).map_err(|e| RegistryError::NotWasm {
            reference: reference.to_string(),
            message: e.to_string(),
        })?;
        let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let size = wasm.len();
        let (layer, config, manifest) = artifact::package(wasm, summary, created, annotations);
        let layer_digest = layer.sha256_digest();
        let (auth, source) = auth::credentials(parsed.resolve_registry(), self.login()).await;
        let response = self
            .inner
            .client
            .push(&parsed, &[layer], config, &auth, Some(manifest))
            .await
            .map_err(|e| classify(e, &parsed, reference, source))?;
        // The registry names the manifest it stored by its digest.
        let manifest_digest = response
            .manifest_url
            .rsplit('/')
            .next()
            .filter(|d| d.starts_with("sha256:"))
            .map(str::to_string);
        let manifest_digest = match manifest_digest {
            Some(digest) => digest,
            None => self.digest(reference).await?,
        };
        Ok(Pushed {
            manifest_digest,
            layer_digest,
            size,
        })
    }

    /// Pulls `reference` (no cache, no status): `optech pull`.
    pub async fn pull(&self, reference: &str) -> Result<(Vec<u8>, Resolved), RegistryError> {
        let parsed = parse(reference)?;
        let limit = self.inner.settings.pull_timeout;
        bounded(reference, limit, self.download(&parsed, reference)).await
    }

    /// The digest `reference` resolves to now (a `HEAD` of its manifest).
    pub async fn digest(&self, reference: &str) -> Result<String, RegistryError> {
        let parsed = parse(reference)?;
        let (auth, source) = auth::credentials(parsed.resolve_registry(), self.login()).await;
        let limit = self.inner.settings.pull_timeout;
        bounded(reference, limit, async {
            self.inner
                .client
                .fetch_manifest_digest(&parsed, &auth)
                .await
                .map_err(|e| classify(e, &parsed, reference, source))
        })
        .await
    }

    /// The component a plugin's `source` names now. `running` is the layer
    /// digest (`sha256:...`) the plugin runs, if any: when the reference still
    /// resolves to it, nothing is downloaded.
    pub async fn fetch(
        &self,
        plugin: &str,
        source: &OciSource,
        running: Option<&str>,
    ) -> Result<Fetched, RegistryError> {
        let reference = source.reference.as_str();
        self.update(plugin, source, |status| {
            status.last_refresh_at = Some(now());
        });
        let result = match self.fetch_online(plugin, source, running).await {
            Err(e) if e.is_unreachable() => self
                .fetch_offline(plugin, source, running, e)
                .await
                .map(|fetched| (fetched, "offline")),
            other => other,
        };
        match result {
            Ok((fetched, outcome)) => {
                self.count_fetch(plugin, outcome);
                if let Fetched::Bytes { resolved, .. } = &fetched {
                    tracing::info!(
                        plugin,
                        reference,
                        digest = %resolved.manifest_digest,
                        "registry: {outcome}"
                    );
                }
                Ok(fetched)
            }
            Err(e) => {
                self.count_error(plugin, e.kind());
                // A rejection shows why the version was refused.
                let rejected = matches!(e, RegistryError::Rejected { .. });
                let message = e.to_string();
                self.update(plugin, source, |status| {
                    status.error = match (rejected, &status.rejected) {
                        (true, Some(r)) => Some(r.reason.clone()),
                        _ => Some(message),
                    };
                });
                tracing::warn!(plugin, reference, "registry: {e}");
                Err(e)
            }
        }
    }

    async fn fetch_online(
        &self,
        plugin: &str,
        source: &OciSource,
        running: Option<&str>,
    ) -> Result<(Fetched, &'static str), RegistryError> {
        let reference = source.reference.as_str();
        let parsed = parse(reference)?;
        let limit = self.inner.settings.pull_timeout;
        // Only a plugin already running skips a version refused before: a
        // change to the plugin's config tries it again, as the docs promise.
        let rejected = running
            .and_then(|_| self.status(plugin))
            .and_then(|s| s.rejected)
            .map(|r| r.digest);
        // The manifest digest the reference resolved to, once it did.
        let mut named = None;
        let outcome = bounded(reference, limit, async {
            let (auth, credentials) =
                auth::credentials(parsed.resolve_registry(), self.login()).await;
            let (manifest, manifest_digest) = self
                .manifest(&parsed, reference, &auth, credentials)
                .await?;
            named = Some(manifest_digest.clone());
            let found = resolved(reference, &manifest, manifest_digest.clone());
            if let Ok((resolved, layer)) = &found
                && running == Some(layer.digest.as_str())
            {
                return Ok((None, resolved.clone(), "unchanged"));
            }
            if rejected.as_ref() == Some(&manifest_digest) {
                return Err(RegistryError::Rejected {
                    reference: reference.to_string(),
                    digest: manifest_digest,
                });
            }
            let (resolved, layer) = found?;
            if let Some(bytes) = self.cached_blob(&layer.digest).await {
                return Ok((Some(bytes), resolved, "cached"));
            }
            let bytes = self
                .download_layer(&parsed, reference, &layer, &auth, credentials)
                .await?;
            Ok((Some(bytes), resolved, "pulled"))
        })
        .await;
        let (bytes, resolved, how) = match outcome {
            Ok(fetched) => fetched,
            Err(e) => {
                if let Some(digest) = named.filter(|_| e.refuses_the_version()) {
                    let reason = e.to_string();
                    self.update(plugin, source, |status| {
                        status.rejected = Some(Rejection { digest, reason });
                    });
                }
                return Err(e);
            }
        };
        // Only a download is new to the cache; which digest the reference
        // names is recorded once the build serves (`serving`).
        if let Some(bytes) = bytes.as_deref().filter(|_| how == "pulled") {
            self.keep_blob(&resolved.layer_digest, bytes).await?;
        }
        let fetched = match bytes {
            None => Fetched::Unchanged {
                resolved,
                offline: false,
            },
            Some(bytes) => Fetched::Bytes {
                bytes,
                resolved,
                offline: false,
            },
        };
        Ok((fetched, how))
    }

    /// The registry could not be asked: what the reference last resolved to here.
    async fn fetch_offline(
        &self,
        plugin: &str,
        source: &OciSource,
        running: Option<&str>,
        cause: RegistryError,
    ) -> Result<Fetched, RegistryError> {
        let reference = source.reference.clone();
        let never = |cause: &RegistryError| RegistryError::NeverPulled {
            reference: reference.clone(),
            cause: cause.to_string(),
        };
        let Some(cache) = self.inner.cache.clone() else {
            return Err(cause);
        };
        let lookup = reference.clone();
        let found = tokio::task::spawn_blocking(move || {
            let resolved = cache.resolved(&lookup)?;
            let bytes = cache.blob(&resolved.layer_digest)?;
            Some((resolved, bytes))
        })
        .await
        .ok()
        .flatten();
        let Some((resolved, bytes)) = found else {
            return Err(never(&cause));
        };
        tracing::warn!(
            plugin,
            reference = %reference,
            digest = %resolved.manifest_digest,
            "registry: {cause}; serving the digest last resolved here, at {}",
            resolved.resolved_at
        );
        let message = cause.to_string();
        self.update(plugin, source, |status| status.error = Some(message));
        if running == Some(resolved.layer_digest.as_str()) {
            return Ok(Fetched::Unchanged {
                resolved,
                offline: true,
            });
        }
        Ok(Fetched::Bytes {
            bytes,
            resolved,
            offline: true,
        })
    }

    async fn cached_blob(&self, digest: &str) -> Option<Vec<u8>> {
        let cache = self.inner.cache.clone()?;
        let digest = digest.to_string();
        tokio::task::spawn_blocking(move || cache.blob(&digest))
            .await
            .ok()
            .flatten()
    }

    /// Keeps a downloaded (and checked) layer in the cache.
    async fn keep_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let Some(cache) = self.inner.cache.clone() else {
            return Ok(());
        };
        let digest = digest.to_string();
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || cache.put_blob(&digest, &bytes))
            .await
            .map_err(|e| RegistryError::Cache(e.to_string()))?
            .map_err(|e| RegistryError::Cache(e.to_string()))
    }

    /// Records that the reference names `resolved`, a version that serves,
    /// for a start while the registry is down; a failure only costs that.
    async fn remember(&self, plugin: &str, resolved: &Resolved) {
        let Some(cache) = self.inner.cache.clone() else {
            return;
        };
        let record = resolved.clone();
        let done = tokio::task::spawn_blocking(move || cache.remember(&record)).await;
        if let Err(e) = done
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            tracing::warn!(plugin, reference = %resolved.reference, "registry cache: {e}");
        }
    }

    /// The manifest `reference` resolves to now, and its digest.
    async fn manifest(
        &self,
        parsed: &Reference,
        reference: &str,
        auth: &RegistryAuth,
        credentials: CredentialSource,
    ) -> Result<(OciImageManifest, String), RegistryError> {
        self.inner
            .client
            .pull_image_manifest(parsed, auth)
            .await
            .map_err(|e| classify(e, parsed, reference, credentials))
    }

    /// Manifest and layer, for `optech pull`.
    async fn download(
        &self,
        parsed: &Reference,
        reference: &str,
    ) -> Result<(Vec<u8>, Resolved), RegistryError> {
        let (auth, credentials) = auth::credentials(parsed.resolve_registry(), self.login()).await;
        let (manifest, manifest_digest) =
            self.manifest(parsed, reference, &auth, credentials).await?;
        let (resolved, layer) = resolved(reference, &manifest, manifest_digest)?;
        let bytes = self
            .download_layer(parsed, reference, &layer, &auth, credentials)
            .await?;
        Ok((bytes, resolved))
    }

    /// The layer's bytes, within the size limit, checked against its digest.
    async fn download_layer(
        &self,
        parsed: &Reference,
        reference: &str,
        layer: &OciDescriptor,
        auth: &RegistryAuth,
        credentials: CredentialSource,
    ) -> Result<Vec<u8>, RegistryError> {
        let limit = self.inner.settings.max_artifact_size;
        let too_large = |size: u64| RegistryError::TooLarge {
            reference: reference.to_string(),
            size,
            limit,
        };
        let declared = u64::try_from(layer.size).unwrap_or(u64::MAX);
        if declared > limit {
            return Err(too_large(declared));
        }
        let _permit = self
            .inner
            .pulls
            .acquire()
            .await
            .map_err(|e| RegistryError::Cache(e.to_string()))?;
        self.inner
            .client
            .store_auth_if_needed(parsed.resolve_registry(), auth)
            .await;
        let mut stream = self
            .inner
            .client
            .pull_blob_stream(parsed, layer)
            .await
            .map_err(|e| classify(e, parsed, reference, credentials))?;
        if let Some(announced) = stream.content_length.filter(|n| *n > limit) {
            return Err(too_large(announced));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(declared.min(limit)).unwrap_or(0));
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| stream_error(e, parsed, reference, layer))?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large((bytes.len() + chunk.len()) as u64));
            }
            hasher.update(&chunk);
            bytes.extend_from_slice(&chunk);
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != layer.digest {
            return Err(RegistryError::DigestMismatch {
                reference: reference.to_string(),
                expected: layer.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Records that `plugin` now serves `resolved` (after it was built), in
    /// its status and, unless it came from the cache, in the cache.
    pub async fn serving(
        &self,
        plugin: &str,
        source: &OciSource,
        resolved: &Resolved,
        offline: bool,
    ) {
        if !offline {
            self.remember(plugin, resolved).await;
        }
        let resolved = resolved.clone();
        self.update(plugin, source, |status| {
            status.digest = Some(resolved.manifest_digest);
            status.layer_digest = Some(resolved.layer_digest);
            status.offline = offline;
            if !offline {
                status.error = None;
                status.rejected = None;
            }
        });
    }

    /// Records that the version `resolved` names was fetched but does not
    /// load (`why`): it is counted, shown, and not fetched again while the
    /// tag names it and the plugin is unchanged.
    pub fn reject(&self, plugin: &str, source: &OciSource, resolved: &Resolved, why: &str) {
        self.count_error(plugin, "not_loadable");
        let digest = resolved.manifest_digest.clone();
        let reason = format!("{} ({digest}) does not load: {why}", source.reference);
        self.update(plugin, source, |status| {
            status.error = Some(reason.clone());
            status.rejected = Some(Rejection { digest, reason });
        });
    }

    /// Counts a fetch by how it went (`pulled`, `cached`, `unchanged`, `offline`).
    fn count_fetch(&self, plugin: &str, outcome: &'static str) {
        if let Some(metrics) = &self.inner.metrics {
            metrics
                .registry_fetches
                .get_or_create(&RegistryLabels {
                    plugin: plugin.to_string(),
                    outcome,
                })
                .inc();
        }
    }

    fn count_error(&self, plugin: &str, kind: &'static str) {
        if let Some(metrics) = &self.inner.metrics {
            metrics
                .registry_errors
                .get_or_create(&RegistryLabels {
                    plugin: plugin.to_string(),
                    outcome: kind,
                })
                .inc();
        }
    }

    /// Asks whether a refreshed tag moved from the digest `plugin` serves.
    /// A failure is recorded, counted and logged, and reads as "not moved".
    pub async fn moved(&self, plugin: &str, source: &OciSource) -> bool {
        let known = self.status(plugin).unwrap_or_default();
        self.update(plugin, source, |status| {
            status.last_refresh_at = Some(now());
        });
        match self.digest(&source.reference).await {
            Ok(digest) if Some(&digest) == known.digest.as_ref() => {
                self.count_fetch(plugin, "unchanged");
                self.update(plugin, source, |status| {
                    status.error = None;
                    status.offline = false;
                    // Unless a reload refused another version meanwhile.
                    if status.rejected == known.rejected {
                        status.rejected = None;
                    }
                });
                false
            }
            // Still the version refused: its reason is shown again (a failed
            // refresh may have replaced it), and it counts.
            Ok(digest) if known.rejected.as_ref().is_some_and(|r| r.digest == digest) => {
                self.count_error(plugin, "rejected");
                self.update(plugin, source, |status| {
                    status.offline = false;
                    status.error = status.rejected.as_ref().map(|r| r.reason.clone());
                });
                false
            }
            Ok(_) => true,
            Err(e) => {
                self.count_error(plugin, e.kind());
                let message = e.to_string();
                tracing::warn!(plugin, reference = %source.reference, "registry refresh: {e}; the version serving keeps serving");
                self.update(plugin, source, |status| status.error = Some(message));
                false
            }
        }
    }

    fn update(&self, plugin: &str, source: &OciSource, change: impl FnOnce(&mut SourceStatus)) {
        let mut status = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        let entry = status.entry(plugin.to_string()).or_default();
        if entry.reference != source.reference {
            *entry = SourceStatus::default();
            entry.reference = source.reference.clone();
        }
        entry.refresh_seconds = source.refresh.map(|d| d.as_secs().max(1));
        change(entry);
    }

    /// One plugin's registry status.
    pub fn status(&self, plugin: &str) -> Option<SourceStatus> {
        let status = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        status.get(plugin).cloned()
    }

    /// Forgets the plugins no longer loaded from a registry.
    pub fn retain(&self, plugins: &[&str]) {
        let mut status = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        status.retain(|name, _| plugins.contains(&name.as_str()));
    }
}

/// What `reference` resolved to: the manifest's digest and its wasm layer.
fn resolved(
    reference: &str,
    manifest: &OciImageManifest,
    manifest_digest: String,
) -> Result<(Resolved, OciDescriptor), RegistryError> {
    let layer = artifact::wasm_layer(manifest)
        .map_err(|message| RegistryError::NotWasm {
            reference: reference.to_string(),
            message,
        })?
        .clone();
    let resolved = Resolved {
        reference: reference.to_string(),
        manifest_digest,
        layer_digest: layer.digest.clone(),
        resolved_at: now(),
    };
    Ok((resolved, layer))
}

/// Runs `work` within `limit`.
async fn bounded<T>(
    reference: &str,
    limit: Duration,
    work: impl Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(RegistryError::Timeout {
            reference: reference.to_string(),
            limit,
        })
    })
}

fn parse(reference: &str) -> Result<Reference, RegistryError> {
    reference
        .parse::<Reference>()
        .map_err(|e| RegistryError::BadReference {
            reference: reference.to_string(),
            message: e.to_string(),
        })
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// An error of the OCI client, as a kind a user can act on.
fn classify(
    error: OciDistributionError,
    parsed: &Reference,
    reference: &str,
    credentials: CredentialSource,
) -> RegistryError {
    let registry = parsed.registry().to_string();
    let reference = reference.to_string();
    match error {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
            registry,
            credentials,
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => RegistryError::Unauthorized {
            registry,
            credentials,
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            use oci_client::errors::OciErrorCode as Code;
            let codes: Vec<&Code> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, Code::Unauthorized | Code::Denied))
            {
                RegistryError::Unauthorized {
                    registry,
                    credentials,
                }
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    Code::ManifestUnknown | Code::NameUnknown | Code::NotFound | Code::BlobUnknown
                )
            }) {
                RegistryError::NotFound { reference }
            } else {
                RegistryError::Registry {
                    reference,
                    message: envelope
                        .errors
                        .iter()
                        .map(|e| e.message.clone())
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => {
            RegistryError::NotFound { reference }
        }
        OciDistributionError::ServerError { code, .. } if code >= 500 => {
            RegistryError::Unreachable {
                registry,
                message: format!("it answered {code}"),
            }
        }
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            let mut message = root_cause(&e);
            if message.contains("InvalidContentType") || message.contains("corrupt message") {
                // What rustls says when the other end answers TLS with plain HTTP.
                message.push_str(
                    " (it may speak plain HTTP: list it in [server] insecure_registries)",
                );
            } else if message.contains("UnknownIssuer") {
                message.push_str(
                    " (a registry behind a private certificate authority: name its CA's PEM file in [server] registry_ca)",
                );
            }
            RegistryError::Unreachable { registry, message }
        }
        OciDistributionError::RequestError(e) if e.is_status() => match e.status() {
            Some(s) if s.as_u16() == 401 || s.as_u16() == 403 => RegistryError::Unauthorized {
                registry,
                credentials,
            },
            Some(s) if s.as_u16() == 404 => RegistryError::NotFound { reference },
            Some(s) if s.is_server_error() => RegistryError::Unreachable {
                registry,
                message: format!("it answered {s}"),
            },
            _ => RegistryError::Registry {
                reference,
                message: root_cause(&e),
            },
        },
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => RegistryError::DigestMismatch {
            reference,
            expected,
            actual,
        },
        OciDistributionError::RequestError(e) => RegistryError::Registry {
            reference,
            message: root_cause(&e),
        },
        other => RegistryError::Registry {
            reference,
            message: other.to_string(),
        },
    }
}

/// An error while streaming a layer: a digest check by the client, or the connection.
fn stream_error(
    error: std::io::Error,
    parsed: &Reference,
    reference: &str,
    layer: &OciDescriptor,
) -> RegistryError {
    if let Some(oci_client::errors::DigestError::VerificationError { actual, .. }) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
    {
        return RegistryError::DigestMismatch {
            reference: reference.to_string(),
            expected: layer.digest.clone(),
            actual: actual.clone(),
        };
    }
    RegistryError::Unreachable {
        registry: parsed.registry().to_string(),
        message: format!("the download broke off: {error}"),
    }
}

/// The innermost message of an error chain: "Connection refused", not "error sending request".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The SHA-256 of `bytes` as a digest.
pub fn layer_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
