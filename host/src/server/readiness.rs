//! `GET /readyz` on both listeners: 200 while the host takes work, 503 from
//! the moment it starts shutting down, and 503 while the outbox cannot record
//! if any mapped plugin answers later (async or auto), so a load balancer
//! sends requests to a replica that can keep its promises.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::config::Mode;
use crate::jobs::OutboxHealth;
use crate::router::Router;

/// Whether the host takes new work; cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    /// `true` once shutdown has begun.
    stopping: watch::Receiver<bool>,
    router: Arc<Router>,
    outbox: Arc<OutboxHealth>,
}

impl Readiness {
    /// A host only exists once its plugins are loaded, so there is no "not
    /// yet" state to report.
    pub fn new(
        stopping: watch::Receiver<bool>,
        router: Arc<Router>,
        outbox: Arc<OutboxHealth>,
    ) -> Self {
        Self {
            stopping,
            router,
            outbox,
        }
    }

    /// Why the host takes no new work, if it does not.
    pub fn not_ready(&self) -> Option<String> {
        if *self.stopping.borrow() {
            return Some("shutting down".into());
        }
        if !self.outbox.is_up() {
            let answers_later = self
                .router
                .snapshot()
                .iter()
                .any(|(_, plugin)| plugin.settings.mode != Mode::Sync);
            if answers_later {
                return Some(format!(
                    "the outbox cannot record: {}",
                    self.outbox.reason().unwrap_or_default()
                ));
            }
        }
        None
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    pub fn answer(&self) -> Response {
        match self.not_ready() {
            None => (
                StatusCode::OK,
                axum::Json(serde_json::json!({"status": "ready"})),
            )
                .into_response(),
            Some(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": reason})),
            )
                .into_response(),
        }
    }
}
