//! Optional TLS termination on the public listener (`[server] tls_cert` and
//! `tls_key`, PEM files), so a host can face the platform directly without a
//! proxy. The files' directories are watched: a renewed certificate is
//! served to new connections without a restart, whether the files are
//! replaced in place or a Kubernetes Secret volume swaps its `..data` link.
//!
//! Invariant: a certificate or key that does not load never replaces the one
//! being served; the reason is logged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use axum_server::tls_rustls::RustlsConfig;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::OutcomeLabels;

pub use crate::config::TlsFiles;

impl TlsFiles {
    /// Loads the files: a start-up error names them and says why.
    pub async fn load(&self) -> anyhow::Result<RustlsConfig> {
        RustlsConfig::from_pem_file(&self.cert, &self.key)
            .await
            .with_context(|| {
                format!(
                    "loading the TLS certificate {} and key {}",
                    self.cert.display(),
                    self.key.display()
                )
            })
    }

    /// Reloads `config` from the files whenever their contents change, until
    /// the handle is dropped, counting each reload's result in `reloads`.
    ///
    /// The directories holding the files are watched, not the files: a
    /// Kubernetes Secret volume renews a certificate by swapping its `..data`
    /// symlink to a new directory, which changes no file named in the config.
    /// Any change in those directories makes the host read both files again;
    /// it reloads only when what they hold differs from what it last loaded.
    pub fn watch(
        &self,
        config: RustlsConfig,
        reloads: Family<OutcomeLabels, Counter>,
    ) -> anyhow::Result<TlsWatch> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut debouncer = new_debouncer(
            Duration::from_millis(200),
            None,
            move |result: DebounceEventResult| {
                let Ok(events) = result else { return };
                if events.iter().any(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            },
        )?;
        let mut dirs: Vec<PathBuf> = [&self.cert, &self.key].iter().map(|f| parent(f)).collect();
        dirs.dedup();
        for dir in &dirs {
            debouncer.watch(dir, RecursiveMode::NonRecursive)?;
        }
        let this = self.clone();
        let task = tokio::spawn(async move {
            let mut loaded = this.read().await.ok().map(|pair| pair.fingerprint());
            while rx.recv().await.is_some() {
                while rx.try_recv().is_ok() {}
                let pair = match this.read().await {
                    Ok(pair) => pair,
                    // Mid-swap, or removed: wait for the next change.
                    Err(e) => {
                        tracing::debug!("TLS files changed but cannot be read yet: {e}");
                        continue;
                    }
                };
                let fingerprint = pair.fingerprint();
                if loaded == Some(fingerprint) {
                    continue;
                }
                // The same contents are not tried twice, whether they load or not.
                loaded = Some(fingerprint);
                let result = config.reload_from_pem(pair.cert, pair.key).await;
                let outcome = if result.is_ok() { "ok" } else { "failed" };
                reloads.get_or_create(&OutcomeLabels { outcome }).inc();
                match result {
                    Ok(()) => {
                        tracing::info!("reloaded the TLS certificate {}", this.cert.display())
                    }
                    Err(e) => tracing::warn!(
                        "the TLS certificate {} or key {} does not load, keeping the current one: {e}",
                        this.cert.display(),
                        this.key.display()
                    ),
                }
            }
        });
        Ok(TlsWatch {
            _debouncer: std::sync::Mutex::new(Box::new(debouncer)),
            task,
        })
    }

    /// Both files' contents, read through any symlinks as they are now.
    async fn read(&self) -> std::io::Result<PemPair> {
        Ok(PemPair {
            cert: tokio::fs::read(&self.cert).await?,
            key: tokio::fs::read(&self.key).await?,
        })
    }
}

/// A certificate chain and its key, as read.
struct PemPair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl PemPair {
    fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update((self.cert.len() as u64).to_le_bytes());
        hash.update(&self.cert);
        hash.update(&self.key);
        hash.finalize().into()
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Keeps the certificate watcher alive; dropping it stops watching.
pub struct TlsWatch {
    // In a mutex only to make the handle `Sync`, as the host that owns it is.
    _debouncer: std::sync::Mutex<Box<dyn std::any::Any + Send>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
