//! The stand-in back end of contenders d, d2 and e: `GET /orders/{id}` answers a
//! small JSON order to a request with the bench's bearer token. Under `/close/`
//! it answers the same with `connection: close`, so every request needs a new
//! connection, as with a sender that keeps none alive.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The token contenders send, as `authorization: Bearer <token>`.
pub const TOKEN: &str = "bench-token";

pub struct BackEnd {
    pub addr: SocketAddr,
}

impl BackEnd {
    /// Starts on a free loopback port, on one thread of its own.
    pub fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("the back end's runtime")?;
        std::thread::Builder::new()
            .name("bench-backend".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let app = axum::Router::new()
                        .route("/orders/{id}", get(order))
                        .route("/close/orders/{id}", get(order_then_close));
                    if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                        let _ = axum::serve(listener, app).await;
                    }
                })
            })?;
        Ok(Self { addr })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn order(Path(id): Path<String>, headers: HeaderMap) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ") == Some(TOKEN));
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    (
        [("content-type", "application/json")],
        format!(r#"{{"id":"{id}","status":"shipped","carrier":"DHL","eta":"2026-11-28"}}"#),
    )
        .into_response()
}

async fn order_then_close(path: Path<String>, headers: HeaderMap) -> Response {
    let mut response = order(path, headers).await;
    response
        .headers_mut()
        .insert("connection", axum::http::HeaderValue::from_static("close"));
    response
}
