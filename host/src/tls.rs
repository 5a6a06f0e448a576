//! Optional TLS termination on the public listener (`[server] tls_cert` and
//! `tls_key`, PEM files), so a host can face the platform directly without a
//! proxy. The files are watched: a renewed certificate is served to new
//! connections without a restart.
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

/// The certificate chain and private key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

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

    /// Reloads `config` from the files whenever they change, until the handle
    /// is dropped, counting each reload's result in `reloads`.
    pub fn watch(
        &self,
        config: RustlsConfig,
        reloads: Family<OutcomeLabels, Counter>,
    ) -> anyhow::Result<TlsWatch> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let files = [self.cert.clone(), self.key.clone()];
        let names: Vec<_> = files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_owned()))
            .collect();
        let mut debouncer = new_debouncer(
            Duration::from_millis(200),
            None,
            move |result: DebounceEventResult| {
                let Ok(events) = result else { return };
                let touched = events
                    .iter()
                    .filter(|e| !e.kind.is_access())
                    .flat_map(|e| e.paths.iter())
                    .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)));
                if touched {
                    let _ = tx.send(());
                }
            },
        )?;
        for dir in files.iter().map(|f| parent(f)) {
            debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
        }
        let this = self.clone();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                while rx.try_recv().is_ok() {}
                let result = config.reload_from_pem_file(&this.cert, &this.key).await;
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
