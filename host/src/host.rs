//! Assembles a running host from a config: runtime, plugins, router, server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::loader;
use crate::router::{Router, Routes};
use crate::runtime::{Runtime, RuntimeOptions};
use crate::server::{self, AppState};
use crate::signature::Signer;

/// A host serving on a socket.
pub struct Host {
    pub addr: SocketAddr,
    pub router: Arc<Router>,
    pub runtime: Runtime,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Host {
    /// Loads every plugin (failing on the first bad config or plugin, with all
    /// load errors listed) and starts serving on `listener`.
    pub async fn start(
        config: &Config,
        signer: Signer,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let runtime = Runtime::new(&RuntimeOptions {
            max_instances: u32::try_from(config.server.max_in_flight).unwrap_or(u32::MAX),
        })?;
        let plugins = loader::load_all(&runtime, config).await.map_err(|errors| {
            let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            anyhow::anyhow!(
                "{}: cannot load plugins:\n{}",
                config.path.display(),
                list.join("\n")
            )
        })?;
        for plugin in config
            .plugins
            .values()
            .filter(|p| p.mode != crate::config::Mode::Sync)
        {
            tracing::warn!(plugin = %plugin.name, "mode {:?} is not implemented yet; answering synchronously", plugin.mode);
        }
        let router = Arc::new(Router::new(Routes::new(&config.keys, &plugins)));
        let state = Arc::new(AppState::new(
            router.clone(),
            signer,
            config.server.max_body,
            config.server.max_in_flight,
        ));
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
            shutdown,
            server,
        })
    }

    /// Stops accepting, lets requests in flight finish, and returns when the server is down.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.server.await.context("server task")?.context("server")
    }

    /// Runs until the server stops by itself (it does not, unless it fails).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await.context("server task")?.context("server")
    }

    /// A handle that stops the server when sent `true`.
    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }
}
