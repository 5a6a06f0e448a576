//! The stand-in back end of contenders d to e: `GET /orders/{id}` answers a
//! small JSON order to a request with the bench's bearer token. Under `/close/`
//! it answers the same with `connection: close`, so every request needs a new
//! connection, as with a sender that keeps none alive. `POST /oauth/token` is
//! the client-credentials grant of d4 and d5, which issues that token. It
//! counts tokens issued and orders served, so the run can check what a token
//! cache saves rather than only time it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The token contenders send, as `authorization: Bearer <token>`.
pub const TOKEN: &str = "bench-token";
/// The client of the client-credentials grant, and its secret.
pub const CLIENT_ID: &str = "bench";
pub const CLIENT_SECRET: &str = "bench-client-secret";
/// `bench:bench-client-secret`, as HTTP Basic sends it.
const BASIC: &str = "Basic YmVuY2g6YmVuY2gtY2xpZW50LXNlY3JldA==";

pub struct BackEnd {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
}

/// What the back end has done since it started.
#[derive(Default)]
struct Counts {
    tokens: AtomicU64,
    orders: AtomicU64,
}

/// Tokens issued and orders served, read together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    pub tokens: u64,
    pub orders: u64,
}

impl std::ops::Sub for Served {
    type Output = Served;
    fn sub(self, earlier: Served) -> Served {
        Served {
            tokens: self.tokens - earlier.tokens,
            orders: self.orders - earlier.orders,
        }
    }
}

impl BackEnd {
    /// Starts on a free loopback port, on one thread of its own.
    pub fn start() -> anyhow::Result<Self> {
        let counts = Arc::new(Counts::default());
        let app = axum::Router::new()
            .route("/orders/{id}", get(order))
            .route("/close/orders/{id}", get(order_then_close))
            .route("/oauth/token", post(token))
            .with_state(counts.clone());
        let addr = serve_on_own_thread("bench-backend", app)?;
        Ok(Self { addr, counts })
    }

    pub fn served(&self) -> Served {
        Served {
            tokens: self.counts.tokens.load(Ordering::Relaxed),
            orders: self.counts.orders.load(Ordering::Relaxed),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves `app` on a free loopback port, from a one-worker runtime on a
/// thread of its own (named `name`), so the bench's servers do not share the
/// contenders' threads; returns the address.
pub fn serve_on_own_thread(name: &str, app: axum::Router) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .with_context(|| format!("the runtime of {name}"))?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            runtime.block_on(async move {
                if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                    let _ = axum::serve(listener, app).await;
                }
            })
        })?;
    Ok(addr)
}

/// The client-credentials grant: the bench's client, any form, one token.
async fn token(State(counts): State<Arc<Counts>>, headers: HeaderMap) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(BASIC) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    counts.tokens.fetch_add(1, Ordering::Relaxed);
    (
        [
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        format!(r#"{{"access_token":"{TOKEN}","token_type":"Bearer","expires_in":3600}}"#),
    )
        .into_response()
}

async fn order(
    State(counts): State<Arc<Counts>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ") == Some(TOKEN));
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    counts.orders.fetch_add(1, Ordering::Relaxed);
    (
        [("content-type", "application/json")],
        format!(r#"{{"id":"{id}","status":"shipped","carrier":"DHL","eta":"2026-11-28"}}"#),
    )
        .into_response()
}

async fn order_then_close(
    counts: State<Arc<Counts>>,
    path: Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut response = order(counts, path, headers).await;
    response
        .headers_mut()
        .insert("connection", axum::http::HeaderValue::from_static("close"));
    response
}
