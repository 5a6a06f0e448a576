//! The HTTP front door: checks each data request in protocol order and
//! dispatches it to the plugin its key routes to.
//!
//! Order of checks (PROTOCOL.md): method, body size, signature, content type,
//! JSON shape, key. Invariant: the signature is verified over the raw bytes
//! before anything reads the JSON, so an unsigned request learns nothing
//! about keys or plugins and never reaches a plugin.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Mode;
use crate::dispatch::{Call, HandlerError, next_request_id};
use crate::jobs::Jobs;
use crate::outbox::OutboxError;
use crate::protocol::{self, DataRequest, Fields};
use crate::reload::{ReloadStatus, Reloader};
use crate::router::{Plugin, Router};
use crate::signature::{SignatureError, Signer};

pub const SIGNATURE_HEADER: &str = "x-optech-signature";

/// Everything a request handler needs, shared by all connections.
pub struct AppState {
    pub router: Arc<Router>,
    pub signer: Signer,
    pub max_body: usize,
    /// Requests running at once, sync and async together.
    pub in_flight: Arc<Semaphore>,
    pub jobs: Arc<Jobs>,
    pub reloader: Arc<Reloader>,
}

/// The axum app: `GET /healthz`, and a data request on any other POST.
pub fn app(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz).fallback(data_request))
        .fallback(data_request)
        .with_state(state)
}

/// An error answer: a status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = protocol::error_body(self.code, &self.message);
        let mut response = (self.status, json_headers(), body).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<HandlerError> for ApiError {
    fn from(error: HandlerError) -> Self {
        let status = match &error {
            HandlerError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            HandlerError::Failed(_)
            | HandlerError::Trapped(_)
            | HandlerError::OutputTooLarge { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            HandlerError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            HandlerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

fn json_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )]
}

async fn data_request(
    State(app): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = next_request_id();
    match handle_data_request(&app, request_id, method, &headers, body).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(
                request = request_id,
                status = error.status.as_u16(),
                code = error.code,
                "{}",
                error.message
            );
            error.into_response()
        }
    }
}

async fn handle_data_request(
    app: &AppState,
    request_id: u64,
    method: Method,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if method != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("data requests are POSTed; {method} is not accepted here"),
        ));
    }
    let bytes = read_body(headers, body, app.max_body).await?;
    let (request, plugin) = check_request(&app.router, &app.signer, headers, &bytes)?;
    let permits = admit(app, &plugin)?;
    match plugin.settings.mode {
        Mode::Sync => {
            let call = Call {
                request_id,
                key: request.key,
                inputs: request.inputs,
            };
            let result = plugin.handler.call(call).await;
            drop(permits);
            answer_now(app, request_id, &plugin, result)
        }
        Mode::Async => run_async(app, request_id, plugin, request, permits).await,
        Mode::Auto => run_auto(app, request_id, plugin, request, permits).await,
    }
}

type Permits = (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>);

/// `async` mode: record, answer 202, run and deliver in the background.
async fn run_async(
    app: &AppState,
    request_id: u64,
    plugin: Arc<Plugin>,
    request: DataRequest,
    permits: Permits,
) -> Result<Response, ApiError> {
    let link = required_link(&request, &plugin)?;
    let Some(expires_at) = app
        .jobs
        .record(&link, &request.key, &request.inputs)
        .await
        .map_err(store_error)?
    else {
        tracing::debug!(
            request = request_id,
            link,
            "duplicate request: already accepted"
        );
        return Ok(accepted());
    };
    let call = Call {
        request_id,
        key: request.key,
        inputs: request.inputs,
    };
    let running = app.jobs.spawn_call(plugin, call, permits);
    app.jobs.track(link, expires_at, running);
    Ok(accepted())
}

/// `auto` mode: answer 200 if the handler finishes within `sync_budget`, else
/// record, answer 202 and deliver when it finishes.
async fn run_auto(
    app: &AppState,
    request_id: u64,
    plugin: Arc<Plugin>,
    request: DataRequest,
    permits: Permits,
) -> Result<Response, ApiError> {
    let link = request
        .link
        .as_deref()
        .map(|_| required_link(&request, &plugin))
        .transpose()?;
    if let Some(link) = &link {
        // A read, not a write: the synchronous path never writes to disk.
        if app.jobs.seen(link).await.map_err(store_error)? {
            return Ok(accepted());
        }
    }
    let (key, inputs) = (request.key.clone(), request.inputs.clone());
    let call = Call {
        request_id,
        key: request.key,
        inputs: request.inputs,
    };
    let mut running = app.jobs.spawn_call(plugin.clone(), call, permits);
    let budget = tokio::time::sleep(plugin.settings.sync_budget);
    tokio::select! {
        result = &mut running => return answer_now(app, request_id, &plugin, joined(result)),
        _ = budget => {}
    }
    let Some(link) = link else {
        // Without a link the only answer is a synchronous one: keep waiting.
        return answer_now(app, request_id, &plugin, joined(running.await));
    };
    match app.jobs.record(&link, &key, &inputs).await {
        Ok(Some(expires_at)) => {
            app.jobs.track(link, expires_at, running);
            Ok(accepted())
        }
        Ok(None) => {
            running.abort();
            Ok(accepted())
        }
        Err(e) => {
            // Cannot promise a later answer: give the one we will have.
            tracing::error!(
                request = request_id,
                "cannot record an async answer, answering synchronously: {e}"
            );
            answer_now(app, request_id, &plugin, joined(running.await))
        }
    }
}

fn joined(
    result: Result<Result<Fields, HandlerError>, tokio::task::JoinError>,
) -> Result<Fields, HandlerError> {
    result.unwrap_or_else(|e| {
        Err(HandlerError::Trapped(format!(
            "the handler task failed: {e}"
        )))
    })
}

/// The request's `link`, which async answers need: present and http(s).
fn required_link(request: &DataRequest, plugin: &Plugin) -> Result<String, ApiError> {
    let Some(link) = &request.link else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "link_required",
            format!(
                "plugin `{}` answers asynchronously, so the request needs a `link`",
                plugin.settings.name
            ),
        ));
    };
    match reqwest::Url::parse(link) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(link.clone()),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("`link` must be an http(s) URL, got {link:?}"),
        )),
    }
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

fn store_error(error: OutboxError) -> ApiError {
    tracing::error!("outbox: {error}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the host cannot record the request for an async answer right now",
    )
}

/// Everything between reading the body and running a handler: signature,
/// content type, envelope, key. Pure CPU and no I/O, so it is also the fuzz target.
pub fn check_request(
    router: &Router,
    signer: &Signer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(DataRequest, Arc<Plugin>), ApiError> {
    signer
        .verify(
            headers.get(SIGNATURE_HEADER).map(HeaderValue::as_bytes),
            body,
        )
        .map_err(signature_error)?;
    check_content_type(headers)?;
    let request = protocol::parse_request(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    let plugin = router.route(&request.key).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_key",
            format!("no plugin is mapped to key {:?}", request.key),
        )
    })?;
    Ok((request, plugin))
}

/// Takes a global and a per-plugin slot, or refuses with 503: a flood never queues.
fn admit(
    app: &AppState,
    plugin: &Plugin,
) -> Result<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>), ApiError> {
    let overloaded = |what: &str| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("too many requests in flight {what}; retry shortly"),
        )
    };
    let global = app
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| overloaded("on this host"))?;
    let own = match &plugin.in_flight {
        Some(sem) => Some(
            sem.clone()
                .try_acquire_owned()
                .map_err(|_| overloaded(&format!("for plugin `{}`", plugin.settings.name)))?,
        ),
        None => None,
    };
    Ok((global, own))
}

/// The synchronous answer to a handler's result: 200 with signed data, or its error.
fn answer_now(
    app: &AppState,
    request_id: u64,
    plugin: &Plugin,
    result: Result<Fields, HandlerError>,
) -> Result<Response, ApiError> {
    let data = result.map_err(|e| {
        tracing::info!(request = request_id, plugin = %plugin.settings.name, code = e.code(), "handler failed: {e}");
        ApiError::from(e)
    })?;
    Ok(signed_json(
        &app.signer,
        StatusCode::OK,
        protocol::data_body(&data),
    ))
}

/// A JSON answer with its body signed, so the platform can check it.
fn signed_json(signer: &Signer, status: StatusCode, body: Vec<u8>) -> Response {
    let signature = signer.sign(&body);
    let mut response = (status, json_headers(), body).into_response();
    if let Ok(value) = HeaderValue::from_str(&signature) {
        response.headers_mut().insert(SIGNATURE_HEADER, value);
    }
    response
}

async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            format!("could not read the body: {e}"),
        )),
    }
}

fn signature_error(error: SignatureError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        error.to_string(),
    )
}

/// `application/json`, with parameters (`; charset=utf-8`) or a `+json` suffix.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        let shown = if value.is_empty() {
            "none".to_string()
        } else {
            format!("{value:?}")
        };
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type must be application/json, got {shown}"),
        ))
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
    mode: crate::config::Mode,
}

async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    let routes = app.router.snapshot();
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
            }),
        }
    }
    axum::Json(Health {
        status: "ok",
        plugins,
        reload: app.reloader.status(),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let ok = [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.optech+json",
        ];
        for value in ok {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert!(check_content_type(&h).is_ok(), "{value}");
        }
        for value in ["text/plain", "application/jsonx", "multipart/form-data"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert!(check_content_type(&h).is_err(), "{value}");
        }
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }
}
