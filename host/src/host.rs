//! Assembles a running host from a config: runtime, plugins, router, async
//! jobs and server; and winds it down again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::delivery::{Deliverer, RetryPolicy};
use crate::jobs::Jobs;
use crate::loader;
use crate::reload::{Reloader, WatchHandle};
use crate::router::{Plugin, Router, Routes};
use crate::runtime::{Runtime, RuntimeOptions};
use crate::server::{self, AppState};
use crate::signature::Signer;

/// Who the host is to the platform: how it signs and verifies, and its client id.
#[derive(Clone)]
pub struct Identity {
    pub signer: Signer,
    /// Sent as `authorization: Basic <id>` with async deliveries.
    pub client_id: String,
    pub retry: RetryPolicy,
}

impl Identity {
    pub fn new(signer: Signer, client_id: impl Into<String>) -> Self {
        Self {
            signer,
            client_id: client_id.into(),
            retry: RetryPolicy::default(),
        }
    }
}

/// A host serving on a socket.
pub struct Host {
    pub addr: SocketAddr,
    pub router: Arc<Router>,
    pub runtime: Runtime,
    pub jobs: Arc<Jobs>,
    pub reloader: Arc<Reloader>,
    _watch: Option<WatchHandle>,
    grace: Duration,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Host {
    /// Loads every plugin (all load errors are listed together), resumes async
    /// answers left open by the last run, and starts serving on `listener`.
    pub async fn start(
        config: &Config,
        identity: Identity,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let runtime = Runtime::new(&RuntimeOptions {
            max_instances: u32::try_from(config.server.max_in_flight).unwrap_or(u32::MAX),
            cache_dir: config
                .server
                .compile_cache
                .then(|| config.server.data_dir.join("compiled")),
            ..RuntimeOptions::default()
        })?;
        let plugins = loader::load_all(&runtime, config).await.map_err(|errors| {
            let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            anyhow::anyhow!(
                "{}: cannot load plugins:\n{}",
                config.path.display(),
                list.join("\n")
            )
        })?;
        Self::start_with_plugins(config, identity, listener, runtime, plugins).await
    }

    /// Starts serving already-loaded plugins. The seam for handlers that are not
    /// WebAssembly (the benchmark's native baseline); `start` is the usual door.
    pub async fn start_with_plugins(
        config: &Config,
        identity: Identity,
        listener: TcpListener,
        runtime: Runtime,
        plugins: BTreeMap<String, Arc<Plugin>>,
    ) -> anyhow::Result<Self> {
        let router = Arc::new(Router::new(Routes::new(&config.keys, &plugins)));
        let reloader = Reloader::new(config.clone(), plugins, runtime.clone(), router.clone());
        let watch = if config.server.watch {
            Some(reloader.watch().await?)
        } else {
            None
        };
        let in_flight = Arc::new(Semaphore::new(config.server.max_in_flight));
        let deliverer =
            Deliverer::new(identity.signer.clone(), &identity.client_id, identity.retry)?;
        let jobs = Arc::new(Jobs::new(
            config.server.data_dir.clone(),
            deliverer,
            router.clone(),
            in_flight.clone(),
            config.server.link_ttl,
        ));
        let resumed = jobs.resume().await.with_context(|| {
            format!(
                "resuming async answers from {}",
                config.server.data_dir.display()
            )
        })?;
        if resumed > 0 {
            tracing::info!("resumed {resumed} async answer(s) left open by the last run");
        }
        let state = Arc::new(AppState {
            router: router.clone(),
            signer: identity.signer,
            max_body: config.server.max_body,
            in_flight,
            jobs: jobs.clone(),
            reloader: reloader.clone(),
        });
        let addr = listener
            .local_addr()
            .context("reading the listening address")?;
        let (shutdown, mut stop) = tokio::sync::watch::channel(false);
        let app = server::app(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await
        });
        Ok(Self {
            addr,
            router,
            runtime,
            jobs,
            reloader,
            _watch: watch,
            grace: config.server.shutdown_grace,
            shutdown,
            server,
        })
    }

    /// Stops accepting, lets requests in flight finish, gives async handlers the
    /// shutdown grace, and leaves what is unfinished in the outbox.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Runs until told to stop through [`Host::shutdown_handle`], then winds
    /// down async work as [`Host::shutdown`] does.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.server.await.context("server task")?.context("server");
        self.jobs.shutdown(self.grace).await;
        served
    }

    /// A handle that stops the server when sent `true`.
    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }
}
