//! The public front door: checks each data request (`checks`), admits it
//! against the in-flight caps, hands it to its plugin in the plugin's mode,
//! and answers. `admin` is the private listener with the details.
//!
//! Invariants: nothing reads JSON before the signature is verified; every
//! error is `{"error": {code, message}}`; the public port tells an anonymous
//! caller nothing about plugins, keys or files.

mod admin;
mod checks;
mod error;
mod file_limit;
mod listener;
mod readiness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

pub use admin::{AdminState, admin_app};
pub use checks::{BodyBudget, check_request};
pub use error::ApiError;
pub use file_limit::connections_within;
pub use listener::{ConnectionLimits, serve};
pub use readiness::Readiness;

use crate::config::Mode;
use crate::dispatch::{DataBody, HandlerError, Overloaded, Plugin, Slots};
use crate::jobs::{Acceptance, AutoAnswer, Jobs, Work};
use crate::link::LinkTag;
use crate::metrics::SharedMetrics;
use crate::outbox::OutboxError;
use crate::protocol::DataRequest;
use crate::rebinding;
use crate::recent::{Names, Ticket};
use crate::request_id::{self, REQUEST_ID_HEADER, RequestId};
use crate::router::{Route, Router};
use crate::signature::{SIGNATURE_HEADER, Signer};
use crate::telemetry;

/// Everything a request handler needs, shared by all connections.
pub struct AppState {
    pub router: Arc<Router>,
    pub signer: Signer,
    pub max_body: usize,
    /// How long a body may take to arrive once its headers have.
    pub body_timeout: Duration,
    /// Body bytes that requests not yet verified may hold, over all of them.
    pub unverified: checks::BodyBudget,
    /// Answer only to a `Host` that names this machine by address: while the
    /// host signs with `optech dev`'s secret, which a web page could use
    /// through DNS rebinding.
    pub local_only: bool,
    /// Requests running at once, sync and async together.
    pub in_flight: Arc<Semaphore>,
    pub jobs: Arc<Jobs>,
    pub metrics: SharedMetrics,
    pub ready: Readiness,
}

/// The public app: `GET /healthz` (status only), `GET /readyz`, and a data
/// request on any other POST.
pub fn app(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz).fallback(data_request))
        .route("/readyz", get(readyz).fallback(data_request))
        .fallback(data_request)
        .with_state(state)
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    app.ready.answer()
}

/// Liveness for anyone: no plugin, key, hash or path.
async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
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
    let mut seen = Seen::new();
    let id = RequestId::from_header(headers.get(REQUEST_ID_HEADER).map(HeaderValue::as_bytes));
    let mut routed = None;
    // Tracing on: the server span, from arrival to answer (else a no-op).
    let span = telemetry::spans::server(&method, id.as_str());
    telemetry::adopt_incoming(&span, &headers);
    let handled = handle_data_request(&app, &id, method, &headers, body, &mut routed, &mut seen)
        .instrument(span.clone())
        .await;
    let recent = &app.metrics.recent;
    let mut response = match handled {
        Ok(response) => {
            let status = response.status().as_u16();
            recent.answered(seen.ticket, &id, seen.arrived, status, None);
            telemetry::spans::answered(&span, status, None);
            response
        }
        Err(mut error) => {
            let status = error.status.as_u16();
            if seen.verified {
                let detail = Some((error.code, error.message.as_str()));
                recent.answered(seen.ticket, &id, seen.arrived, status, detail);
            } else {
                // Anyone can send these: counted, never kept, never traced.
                recent.refused(seen.arrived, error.code);
                telemetry::spans::unsigned(&span);
            }
            if tracing::enabled!(tracing::Level::DEBUG) {
                // Refused before routing: a span with the id only.
                let span = match &routed {
                    Some(Routed { span, .. }) => span.clone(),
                    None => request_id::span(&id),
                };
                tracing::debug!(
                    parent: &span,
                    status = error.status.as_u16(),
                    code = error.code,
                    "{}",
                    error.message
                );
            }
            error.request_id = Some(id.clone());
            if seen.verified {
                error.trace_id = telemetry::ids(&span).map(|(trace, _)| trace);
            }
            telemetry::spans::answered(&span, status, Some(error.code));
            error.into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    app.metrics.request(
        routed.as_ref().map(|r| &*r.names.key),
        response.status().as_u16(),
    );
    response
}

/// What a request that found its plugin carries back out: its names (the key
/// for the metrics) and its span (for a line about how it ended).
struct Routed {
    names: Arc<Names>,
    span: tracing::Span,
}

async fn handle_data_request(
    app: &AppState,
    id: &RequestId,
    method: Method,
    headers: &HeaderMap,
    body: Body,
    routed: &mut Option<Routed>,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    if app.local_only && !rebinding::host_is_an_address(headers) {
        return Err(wrong_host());
    }
    checks::check_method(&method)?;
    let (bytes, unverified) = checks::read_body(
        headers,
        body,
        app.max_body,
        &app.unverified,
        app.body_timeout,
    )
    .await?;
    checks::check_signature(&app.signer, headers, &bytes)?;
    drop(unverified);
    seen.verified = true;
    let (request, route) = checks::check_signed(&app.router, headers, &bytes)?;
    // Nothing before this point logs: the span is made once its fields are
    // known, which costs less than recording them into it afterwards.
    let span = request_id::routed_span(id, &request.key, &route.plugin.settings.name);
    // The server span (current here) is what async work's trace hangs from.
    let trace = if telemetry::enabled() {
        let server = tracing::Span::current();
        let mode = route.plugin.settings.mode.as_str();
        telemetry::spans::routed(&server, &request.key, &route.plugin.settings.name, mode);
        telemetry::carry(&server)
    } else {
        (None, None)
    };
    *routed = Some(Routed {
        names: route.names.clone(),
        span: span.clone(),
    });
    run_routed(app, id, request, route, trace, seen)
        .instrument(span)
        .await
}

/// Admits a routed request and runs it in its plugin's mode.
async fn run_routed(
    app: &AppState,
    id: &RequestId,
    request: DataRequest,
    route: Route,
    trace: telemetry::Carried,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let Route { names, plugin } = route;
    let slots = Slots::try_take(&app.in_flight, &plugin).map_err(|overloaded| {
        app.metrics.unavailable(match overloaded {
            Overloaded::Host => "host",
            Overloaded::Plugin(_) => "plugin",
        });
        ApiError::from(overloaded)
    })?;
    seen.ticket = app
        .metrics
        .recent
        .admitted(id, seen.arrived, &names, plugin.settings.mode);
    if let Some(trace_id) = telemetry::trace_id(&trace) {
        app.metrics.recent.traced(seen.ticket, trace_id);
    }
    let has_link = request.link.is_some();
    let work = Work {
        request_id: id.clone(),
        link: request.link.unwrap_or_default(),
        key: request.key,
        inputs: request.inputs,
        admitted: seen.ticket,
        trace,
    };
    match plugin.settings.mode {
        Mode::Sync => {
            let result = plugin
                .run(work.request_id, work.key, work.inputs, work.admitted)
                .await;
            drop(slots);
            answer_now(app, &plugin, result)
        }
        // The outbox's futures are large (opening it, SQL); boxed, they take
        // room only in the requests that use them: every request's future is
        // allocated and moved whole, at its largest branch's size.
        Mode::Async => {
            let link = LinkTag::new(&work.link);
            let accepted = Box::pin(app.jobs.accept(plugin, work, slots))
                .await
                .map_err(|e| store_error(app, e))?;
            Ok(accepted_response(&link, accepted))
        }
        Mode::Auto => {
            let link = LinkTag::new(&work.link);
            match Box::pin(app.jobs.auto(plugin.clone(), work, has_link, slots))
                .await
                .map_err(|e| store_error(app, e))?
            {
                AutoAnswer::Now(result) => answer_now(app, &plugin, result),
                AutoAnswer::Later(accepted) => Ok(accepted_response(&link, accepted)),
            }
        }
    }
}

fn accepted_response(link: &LinkTag, accepted: Acceptance) -> Response {
    if accepted == Acceptance::Duplicate {
        tracing::debug!(%link, "duplicate request: already accepted");
    }
    StatusCode::ACCEPTED.into_response()
}

fn store_error(app: &AppState, error: OutboxError) -> ApiError {
    tracing::error!("outbox: {error}");
    app.metrics.unavailable("store");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the host cannot record the request for an async answer right now",
    )
}

/// What the console is told about a request: when it arrived, whether its
/// signature was good (a request refused before that is only counted), and
/// its entry once admitted (a signed request refused before that gets one
/// when answered).
struct Seen {
    arrived: Instant,
    verified: bool,
    ticket: Option<Ticket>,
}

impl Seen {
    fn new() -> Self {
        Self {
            arrived: Instant::now(),
            verified: false,
            ticket: None,
        }
    }
}

/// A request under a name that is not this machine's, while the host signs
/// with `optech dev`'s secret.
fn wrong_host() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "host_not_allowed",
        "optech dev answers only to a Host that is this machine's address \
         (127.0.0.1, [::1] or localhost): set OPTECH_CLIENT_SECRET to serve other names",
    )
}

/// The synchronous answer to a handler's result: 200 with signed data, or its error.
fn answer_now(
    app: &AppState,
    plugin: &Plugin,
    result: Result<DataBody, HandlerError>,
) -> Result<Response, ApiError> {
    let body = result.map_err(|e| {
        tracing::info!(plugin = %plugin.settings.name, code = e.code(), "handler failed: {e}");
        if matches!(e, HandlerError::Unavailable(_)) {
            app.metrics.unavailable("instances");
        }
        ApiError::from(e)
    })?;
    Ok(signed_json(&app.signer, StatusCode::OK, body))
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
