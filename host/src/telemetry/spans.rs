//! The spans of a data request, with OpenTelemetry's semantic conventions
//! for HTTP (`http.request.method`, `http.response.status_code`,
//! `server.address`...) and ours under `optech.*`. Each returns
//! `Span::none()` while tracing is off, which costs nothing to carry.

use tracing::Span;
use tracing::field::Empty;

use super::{TARGET, enabled};

/// The server span of one data request, from its arrival to its answer.
pub fn server(method: &http::Method, request_id: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "data request",
        otel.name = "POST /",
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_description = Empty,
        http.request.method = method.as_str(),
        http.route = "/",
        http.response.status_code = Empty,
        "error.type" = Empty,
        optech.request_id = request_id,
        optech.key = Empty,
        optech.plugin = Empty,
        optech.mode = Empty,
        optech.unsigned = Empty,
    )
}

/// Marks a request refused before its signature was verified: anyone can
/// send those, so its span is not exported (`export::Gate`), as the console
/// keeps no entry of it.
pub fn unsigned(span: &Span) {
    span.record(UNSIGNED, true);
}

/// The attribute that marks a span not to export.
pub(super) const UNSIGNED: &str = "optech.unsigned";

/// Records how the request was answered; a 5xx marks the span failed.
pub fn answered(span: &Span, status: u16, error_code: Option<&str>) {
    if span.is_none() {
        return;
    }
    span.record("http.response.status_code", status);
    if let Some(code) = error_code {
        span.record("error.type", code);
    }
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
        if let Some(code) = error_code {
            span.record("otel.status_description", code);
        }
    }
}

/// Records which plugin the request went to, once routed.
pub fn routed(span: &Span, key: &str, plugin: &str, mode: &str) {
    if span.is_none() {
        return;
    }
    span.record("optech.key", key);
    span.record("optech.plugin", plugin);
    span.record("optech.mode", mode);
}

/// One call of a plugin: from taking its slot to the answer's body.
pub fn handler(plugin: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "handler",
        optech.plugin = plugin,
        optech.instance = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
        "error.type" = Empty,
    )
}

/// Marks a span failed with a short error kind (never a value of the request).
pub fn failed(span: &Span, kind: &str, description: &str) {
    if span.is_none() {
        return;
    }
    span.record("otel.status_code", "ERROR");
    span.record("error.type", kind);
    span.record("otel.status_description", description);
}

/// Waiting for a slot to run in (async work the host owes already); a root
/// like [`background`].
pub fn queue() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, parent: None, "queue")
}

/// Making a fresh instance of the plugin.
pub fn instantiate() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "instantiate")
}

/// The plugin's `handle` export running.
pub fn call() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "handle")
}

/// A plugin's outbound request: method, host and port only (a path or a
/// query may hold a value of the request).
pub fn outbound(method: &str, scheme: &str, host: &str, port: u16) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "outbound",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        http.request.method = method,
        url.scheme = scheme,
        server.address = host,
        server.port = port,
        http.response.status_code = Empty,
        http.request.body.size = Empty,
        http.response.body.size = Empty,
        "error.type" = Empty,
        optech.egress.decision = Empty,
    )
}

/// An async request's handler, running after the `202` (or, `resumed`, in
/// a later run or on another replica). A root for `tracing`, joined to the
/// request's trace by `telemetry::resume`: a `tracing` child would hold the
/// server span open until the work ends.
pub fn background(request_id: &str, resumed: bool) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        parent: None,
        "async work",
        optech.request_id = request_id,
        optech.resumed = resumed,
    )
}

/// Recording an accepted async request in the outbox, before its `202`.
pub fn outbox_accept() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "outbox record",
        otel.status_code = Empty,
        otel.status_description = Empty,
        optech.outbox.duplicate = Empty,
    )
}

/// Delivering an async answer to its link, every attempt included. Joined to
/// the request's trace by its stored context (`telemetry::resume`).
pub fn delivery(request_id: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        parent: None,
        "delivery",
        optech.request_id = request_id,
        optech.delivery.attempts = Empty,
        optech.delivery.outcome = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
}

/// One POST of the answer to its link (never the link itself: it is a capability).
pub fn attempt(number: u32) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "delivery attempt",
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        http.request.method = "POST",
        http.response.status_code = Empty,
        "error.type" = Empty,
        optech.delivery.attempt = number,
        optech.delivery.outcome = Empty,
        optech.delivery.retry_in_ms = Empty,
    )
}
