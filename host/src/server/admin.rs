//! The admin listener (`[server] admin_listen`, loopback by default): what an
//! operator needs and an anonymous caller must not see. `GET /healthz` lists
//! the live plugins (keys, content hashes, load times, calls) and reload
//! problems; `GET /metrics` is the Prometheus scrape; `GET /readyz` says
//! whether the host takes work.
//!
//! Invariants: it is served on its own socket, never on the public port; it
//! stays up while the host drains at shutdown, so readiness and metrics can
//! be read until the end.

use crate::registry::SourceStatus;
use std::sync::Arc;

use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::Readiness;
use crate::config::Mode;
use crate::console::{self, Console, access, access::Verdict};
use crate::jobs::Jobs;
use crate::metrics::{Metrics, SharedMetrics};
use crate::reload::{ReloadStatus, Reloader};
use crate::router::Router;
use crate::runtime::Runtime;

/// What the admin endpoints read.
pub struct AdminState {
    pub router: Arc<Router>,
    pub reloader: Arc<Reloader>,
    pub metrics: SharedMetrics,
    pub jobs: Arc<Jobs>,
    /// The engine, for the pool's warm slots.
    pub runtime: Runtime,
    /// The host's in-flight cap and its semaphore, to report how full it is.
    pub max_in_flight: usize,
    pub in_flight: Arc<Semaphore>,
    pub ready: Readiness,
    /// The console's pages, and who may see them and the routes above.
    pub console: Arc<Console>,
}

/// The monitoring routes and the console, behind [`guard`].
pub fn admin_app(state: Arc<AdminState>) -> axum::Router {
    let console = console::routes().with_state(state.console.clone());
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .with_state(state.clone())
        .merge(console)
        .layer(middleware::from_fn_with_state(state, guard))
}

/// Applies `console::access` to every admin route, monitoring ones included:
/// the token when set, else the loopback `Host` and no proxy; and the
/// cross-site checks on POSTs. Assets (scripts, styles) need nothing.
async fn guard(State(admin): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let access = &admin.console.access;
    if console::is_asset(path) {
        return console::secure(next.run(request).await);
    }
    let headers = request.headers();
    let monitoring = matches!(path, "/healthz" | "/metrics" | "/readyz");
    let login = path == "/login" && request.method() == Method::POST;
    let refused =
        |status: StatusCode, text: &'static str| console::secure((status, text).into_response());
    match access.check(headers) {
        Verdict::Allowed => {}
        Verdict::Unauthorized if monitoring => return unauthorized(),
        Verdict::Unauthorized if login => {}
        Verdict::Unauthorized if console::wants_page(headers) => {
            return console::secure(console::login_page());
        }
        Verdict::Unauthorized => return console::secure(unauthorized()),
        Verdict::WrongHost => {
            return refused(
                StatusCode::FORBIDDEN,
                "Open the admin listener by this machine's address (http://127.0.0.1:PORT/), \
                 or set [server] admin_token to reach it by a name.",
            );
        }
        Verdict::Proxied => {
            return refused(
                StatusCode::FORBIDDEN,
                "This request came through a reverse proxy (it says whom it forwards for): \
                 without [server] admin_token the admin listener answers only to this \
                 machine. Set admin_token to reach it through a proxy.",
            );
        }
    }
    if monitoring {
        return next.run(request).await;
    }
    if let Some(reason) = access::cross_site(request.method(), headers) {
        return console::secure((StatusCode::FORBIDDEN, reason).into_response());
    }
    console::secure(next.run(request).await)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "the admin token is required: authorization: Bearer <token>",
    )
        .into_response()
}

async fn readyz(State(admin): State<Arc<AdminState>>) -> Response {
    admin.ready.answer()
}

/// The Prometheus scrape. Gauges that are states (in flight, outbox depth)
/// are read now; counters and histograms are kept as things happen.
async fn metrics(State(admin): State<Arc<AdminState>>) -> Response {
    let metrics = &admin.metrics;
    let free = admin.in_flight.available_permits();
    metrics
        .in_flight
        .set(i64::try_from(admin.max_in_flight.saturating_sub(free)).unwrap_or(i64::MAX));
    metrics.plugin_in_flight.clear();
    for (_, plugin) in admin.router.snapshot().iter() {
        metrics
            .plugin_in_flight
            .get_or_create(&Metrics::plugin(&plugin.settings.name))
            .set(i64::try_from(plugin.stats.running()).unwrap_or(i64::MAX));
    }
    let warm = admin.runtime.warm_slots();
    metrics.pool_warm_slots.set(i64::from(warm.memories));
    metrics
        .pool_warm_bytes
        .set(i64::try_from(warm.bytes).unwrap_or(i64::MAX));
    metrics
        .outbox_claims_held
        .set(i64::try_from(admin.jobs.claims_held()).unwrap_or(i64::MAX));
    metrics
        .outbox_up
        .set(i64::from(admin.jobs.health().is_up()));
    match admin.jobs.open_stats().await {
        Some(Ok(stats)) => {
            metrics
                .outbox_open
                .set(i64::try_from(stats.open).unwrap_or(i64::MAX));
            let age = stats
                .oldest
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            metrics.outbox_oldest_age.set(age.as_secs_f64());
        }
        Some(Err(e)) => tracing::warn!("reading the outbox for metrics: {e}"),
        None => {}
    }
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    plugins: Vec<PluginHealth>,
    reload: ReloadStatus,
}

#[derive(Serialize)]
struct PluginHealth {
    name: String,
    keys: Vec<String>,
    sha256: String,
    loaded_at: String,
    mode: Mode,
    /// Calls running now.
    running: usize,
    /// Calls started since this version was loaded.
    calls: u64,
    /// A registry plugin's reference, digest serving, last refresh and error.
    #[serde(skip_serializing_if = "Option::is_none")]
    registry: Option<SourceStatus>,
}

async fn healthz(State(admin): State<Arc<AdminState>>) -> Response {
    let routes = admin.router.snapshot();
    let mut plugins: Vec<PluginHealth> = Vec::new();
    for (key, plugin) in routes.iter() {
        match plugins
            .iter_mut()
            .find(|p| p.name == plugin.settings.name && p.sha256 == plugin.sha256)
        {
            Some(entry) => entry.keys.push(key.to_string()),
            None => plugins.push(PluginHealth {
                name: plugin.settings.name.clone(),
                keys: vec![key.to_string()],
                sha256: plugin.sha256.clone(),
                loaded_at: humantime::format_rfc3339_seconds(plugin.loaded_at).to_string(),
                mode: plugin.settings.mode,
                running: plugin.stats.running(),
                calls: plugin.stats.started(),
                registry: plugin
                    .settings
                    .source
                    .oci()
                    .and_then(|_| admin.reloader.registry().status(&plugin.settings.name)),
            }),
        }
    }
    axum::Json(Health {
        status: "ok",
        plugins,
        reload: admin.reloader.status(),
    })
    .into_response()
}
