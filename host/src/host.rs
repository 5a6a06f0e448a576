//! Assembles a running host from a config: runtime, plugins, router, async
//! jobs, the public and admin listeners; and winds it down again.
//!
//! Order at start-up: load every plugin, open the outbox if async work may
//! need it, listen, and only then resume what an earlier run left open (in
//! the background), so a large backlog never delays serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::{Config, Mode};
use crate::console::{Access, Console, TryIt};
use crate::delivery::{Deliverer, RetryPolicy};
use crate::dispatch::Plugin;
use crate::jobs::{Jobs, JobsOptions};
use crate::loader;
use crate::metrics::ConnectionCounters;
use crate::outbox::{OutboxError, OutboxSource, State};
use crate::registry::Registry;
use crate::reload::{RefreshHandle, Reloader, WatchHandle};
use crate::router::{Router, Routes};
use crate::runtime::{Runtime, RuntimeOptions};
use crate::server::{self, AdminState, AppState, ConnectionLimits, Readiness};
use crate::signature::Signer;
use crate::store::postgres::PostgresBackend;
use crate::store::sqlite::SqliteBackend;
use crate::store::{Backend, Limits, Pruner, Stores};
use crate::tls::TlsWatch;

/// Connections the admin listener keeps open at once: an operator's browser
/// and a scraper or two.
const ADMIN_CONNECTIONS: usize = 64;

/// How often expired keys of the plugins' store are deleted.
const STORE_PRUNE_PERIOD: Duration = Duration::from_secs(60);

/// The plugins' store: the file `store.sqlite3` in the data directory, or
/// the shared PostgreSQL of the outbox, so replicas share their buckets too.
/// Nothing is opened yet: the first call does.
fn stores_for(config: &Config) -> anyhow::Result<Stores> {
    let limits = Limits::from(&config.store);
    let backend: Arc<dyn Backend> = match &config.server.outbox {
        Some(url) => Arc::new(
            PostgresBackend::new(url.expose()).context("the plugins' store in PostgreSQL")?,
        ),
        None => Arc::new(SqliteBackend::new(&config.server.data_dir)),
    };
    Ok(Stores::new(backend, limits))
}

/// Who the host is to the platform: how it signs and verifies, and its client id.
#[derive(Clone)]
pub struct Identity {
    pub signer: Signer,
    /// Sent as `authorization: Basic <id>` with async deliveries.
    pub client_id: String,
    pub retry: RetryPolicy,
    /// The secret is `optech dev`'s, not the platform's: the public listener
    /// answers only to a `Host` that is this machine's address.
    pub dev_secret: bool,
}

impl Identity {
    pub fn new(signer: Signer, client_id: impl Into<String>) -> Self {
        Self {
            signer,
            client_id: client_id.into(),
            retry: RetryPolicy::default(),
            dev_secret: false,
        }
    }
}

/// A host serving on a socket.
pub struct Host {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    jobs: Arc<Jobs>,
    _watch: Option<WatchHandle>,
    /// Asks registries whether refreshed tags moved; stops when dropped.
    _refresh: RefreshHandle,
    _tls_watch: Option<TlsWatch>,
    _pruner: Pruner,
    grace: Duration,
    shutdown: tokio::sync::watch::Sender<bool>,
    admin_shutdown: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    admin: Option<JoinHandle<std::io::Result<()>>>,
}

impl Host {
    /// Loads every plugin (all load errors are listed together) and starts
    /// serving on `listener`; then resumes async answers left open by the last run.
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
            cache_max: config.server.compile_cache_max,
            keep_resident: config.server.keep_resident,
            stores: Some(stores_for(config)?),
            ..RuntimeOptions::default()
        })?;
        let registry = registry_for(config, &runtime)?;
        let plugins = loader::load_all(&runtime, &registry, config)
            .await
            .map_err(|errors| {
                let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
                anyhow::anyhow!(
                    "{}: cannot load plugins:\n{}",
                    config.path.display(),
                    list.join("\n")
                )
            })?;
        Self::start_loaded(config, identity, listener, runtime, registry, plugins).await
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
        let registry = registry_for(config, &runtime)?;
        Self::start_loaded(config, identity, listener, runtime, registry, plugins).await
    }

    async fn start_loaded(
        config: &Config,
        identity: Identity,
        listener: TcpListener,
        runtime: Runtime,
        registry: Registry,
        plugins: BTreeMap<String, Arc<Plugin>>,
    ) -> anyhow::Result<Self> {
        if let Some(addr) = config.server.admin_listen
            && !addr.ip().is_loopback()
            && config.server.admin.token.is_none()
        {
            anyhow::bail!(
                "the admin listener on {addr} would be reachable beyond this machine without \
                 a token: set [server] admin_token = {{ env = \"NAME\" }}, or listen on 127.0.0.1"
            );
        }
        let admin_listener = match config.server.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen on {addr} for the admin listener: choose another \
                     `[server] admin_listen` (or --admin-listen; port 0 picks a free one, \"\" turns it off)"
                )
            })?),
            None => None,
        };
        let router = Arc::new(Router::new(Routes::new(&config.keys, &plugins)));
        let runtime_metrics = runtime.metrics().clone();
        let pool = runtime.clone();
        let pruner = runtime.stores().prune_every(STORE_PRUNE_PERIOD);
        let reloader = Reloader::new(config.clone(), plugins, runtime, registry, router.clone());
        let watch = if config.server.watch {
            Some(reloader.watch().await?)
        } else {
            None
        };
        let refresh = reloader.refresh_registries();
        let in_flight = Arc::new(Semaphore::new(config.server.max_in_flight));
        let metrics = runtime_metrics.clone();
        let admin_settings = &config.server.admin;
        metrics.recent.configure(
            admin_settings.console_requests,
            admin_settings.console_payloads,
        );
        let deliverer = Deliverer::new(
            identity.signer.clone(),
            &identity.client_id,
            identity.retry.clone(),
        )?
        .observed_by(metrics.recent.clone());
        let source = match &config.server.outbox {
            Some(url) => OutboxSource::Postgres {
                url: url.expose().to_string(),
                lease: config.server.outbox_lease,
            },
            None => OutboxSource::Sqlite {
                data_dir: config.server.data_dir.clone(),
                max_size: config.server.outbox_max_size,
            },
        };
        let outbox = source.outbox();
        let jobs = Arc::new(Jobs::new(
            JobsOptions {
                source,
                link_ttl: config.server.link_ttl,
                retention: config.server.outbox_retention,
            },
            outbox,
            deliverer,
            router.clone(),
            in_flight.clone(),
            metrics.clone(),
        ));
        let answers_later = config.plugins.values().any(|p| p.mode != Mode::Sync);
        if answers_later || jobs.has_records() {
            // Async plugins cannot work without it: better to fail now than on the first request.
            jobs.prepare()
                .await
                .with_context(|| format!("opening the outbox ({:?})", jobs.source()))?;
            tracing::info!("outbox: {:?}", jobs.source());
        }

        let addr = listener
            .local_addr()
            .context("reading the listening address")?;
        let (shutdown, stop) = tokio::sync::watch::channel(false);
        // The admin listener outlives the drain: it stops once jobs have wound down.
        let (admin_shutdown, admin_stop) = tokio::sync::watch::channel(false);
        let ready = Readiness::new(stop.clone(), router.clone(), jobs.health().clone());
        let clients = &config.server.clients;
        let state = Arc::new(AppState {
            router: router.clone(),
            signer: identity.signer.clone(),
            max_body: config.server.max_body,
            body_timeout: clients.body_timeout,
            unverified: crate::server::BodyBudget::new(
                clients.max_unverified,
                metrics.unverified_body_bytes.clone(),
            ),
            local_only: identity.dev_secret,
            in_flight: in_flight.clone(),
            jobs: jobs.clone(),
            metrics: metrics.clone(),
            ready: ready.clone(),
        });
        let app = server::app(state);
        let limits = ConnectionLimits {
            max_connections: server::connections_within(clients.max_connections),
            header_timeout: clients.header_timeout,
            send_timeout: clients.send_timeout,
        };
        let (tls, tls_watch) = match &config.server.tls {
            Some(files) => {
                let tls = files.load().await?;
                let watch = files.watch(tls.clone(), metrics.tls_reloads.clone())?;
                (Some(tls), Some(watch))
            }
            None => (None, None),
        };
        let server = server::serve(
            listener,
            app,
            limits.clone(),
            tls,
            metrics.connections.clone(),
            stop,
        );
        let (admin, admin_addr) = match admin_listener {
            Some(listener) => {
                let admin_addr = listener
                    .local_addr()
                    .context("reading the admin listener's address")?;
                let admin_settings = &config.server.admin;
                let access = Access::new(admin_settings.token.as_ref().map(|t| t.expose()));
                let console = Arc::new(Console {
                    router: router.clone(),
                    reloader: reloader.clone(),
                    jobs: jobs.clone(),
                    recent: metrics.recent.clone(),
                    access,
                    try_it: TryIt::new(
                        addr,
                        config.server.tls.is_some(),
                        identity.signer.clone(),
                        &identity.client_id,
                    )?,
                    stores: pool.stores().clone(),
                    answers_later,
                });
                let state = Arc::new(AdminState {
                    console,
                    router,
                    reloader,
                    metrics,
                    jobs: jobs.clone(),
                    runtime: pool,
                    max_in_flight: config.server.max_in_flight,
                    in_flight,
                    ready,
                });
                let app = server::admin_app(state);
                let limits = ConnectionLimits {
                    max_connections: ADMIN_CONNECTIONS,
                    ..limits
                };
                let served = server::serve(
                    listener,
                    app,
                    limits,
                    None,
                    ConnectionCounters::default(),
                    admin_stop,
                );
                (Some(served), Some(admin_addr))
            }
            None => (None, None),
        };
        jobs.resume();
        Ok(Self {
            addr,
            admin_addr,
            jobs,
            _watch: watch,
            _refresh: refresh,
            _tls_watch: tls_watch,
            _pruner: pruner,
            grace: config.server.shutdown_grace,
            shutdown,
            admin_shutdown,
            server,
            admin,
        })
    }

    /// Where the public listener is.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin listener is, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The outbox state of one link's record, for tests and tools.
    pub async fn record_state(&self, link: &str) -> Result<Option<State>, OutboxError> {
        self.jobs.state(link).await
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
        let _ = self.admin_shutdown.send(true);
        if let Some(admin) = self.admin {
            admin
                .await
                .context("admin task")?
                .context("admin listener")?;
        }
        served
    }

    /// A handle that stops the server when sent `true`.
    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// The host's registry client: its cache beside the compile cache in
/// `data_dir`, its counts in the host's metrics.
fn registry_for(config: &Config, runtime: &Runtime) -> anyhow::Result<Registry> {
    Registry::new(
        &config.server.registry,
        Some(config.server.data_dir.join("registry")),
        Some(runtime.metrics().clone()),
    )
    .context("starting the registry client")
}
