//! `GET /readyz` on both listeners: 200 once the host is serving (every
//! mapped plugin loaded, the outbox open when async work needs it), 503 from
//! the moment it starts shutting down, so a load balancer drains it first.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

/// Whether the host takes new work; cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    /// `true` once shutdown has begun.
    stopping: watch::Receiver<bool>,
}

impl Readiness {
    /// Ready until `stopping` turns true. A host only exists once its plugins
    /// are loaded, so there is no "not yet" state to report.
    pub fn new(stopping: watch::Receiver<bool>) -> Self {
        Self { stopping }
    }

    pub fn is_ready(&self) -> bool {
        !*self.stopping.borrow()
    }

    pub fn answer(&self) -> Response {
        if self.is_ready() {
            (
                StatusCode::OK,
                axum::Json(serde_json::json!({"status": "ready"})),
            )
                .into_response()
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "shutting down"})),
            )
                .into_response()
        }
    }
}
