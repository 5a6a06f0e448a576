//! The admin listener (`[server] admin_listen`, loopback by default): what an
//! operator needs and an anonymous caller must not see. `GET /healthz` lists
//! the live plugins (keys, content hashes, load times, calls) and reload problems.
//!
//! Invariant: it is served on its own socket, never on the public port.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::config::Mode;
use crate::reload::{ReloadStatus, Reloader};
use crate::router::Router;

/// What the admin endpoints read.
pub struct AdminState {
    pub router: Arc<Router>,
    pub reloader: Arc<Reloader>,
}

pub fn admin_app(state: Arc<AdminState>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
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
