//! OpenTelemetry traces of every data request: a server span, the plugin's
//! queue wait, instantiation and call, a client span per outbound request,
//! and the async answer's record and delivery attempts, exported over OTLP.
//!
//! Invariants:
//! - off unless configured, and then free: every span here is made only when
//!   [`enabled`] (one atomic load), so with tracing off nothing is allocated
//!   or recorded that was not before;
//! - spans go to OpenTelemetry only (target [`TARGET`]), never to the log;
//!   the log's lines carry the ids instead (`logging`);
//! - no attribute holds an input, an output, a token or a secret: spans
//!   carry names, sizes, statuses and error kinds, and plugin messages only
//!   after the redactor;
//! - the collector cannot slow a request (`export`).

mod counts;
mod export;
mod settings;
pub mod spans;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

pub use counts::register;
pub use settings::{Off, Settings, SettingsError, Source, resolve};

use crate::config::Incoming;

/// The target of the spans made for OpenTelemetry (and kept out of the log).
pub const TARGET: &str = "optech_trace";

/// What the request path asks of tracing once it is on.
#[derive(Debug)]
struct Active {
    incoming: Incoming,
    propagate: bool,
    trace_url: Option<String>,
}

static ACTIVE: OnceLock<Active> = OnceLock::new();

/// Whether spans are being made: decided once, at start.
#[inline]
pub fn enabled() -> bool {
    ACTIVE.get().is_some()
}

/// Whether plugins' outbound requests carry the trace (`propagate`).
pub fn propagates() -> bool {
    ACTIVE.get().is_some_and(|a| a.propagate)
}

/// The console's link to a trace, if `trace_url` is set.
pub fn trace_url(trace_id: &str) -> Option<String> {
    let template = ACTIVE.get()?.trace_url.as_ref()?;
    Some(template.replace("{trace_id}", trace_id))
}

/// A running exporter: flush it with [`Tracing::shutdown`] before exiting.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Builds the exporter and turns span-making on. Runs inside the tokio
    /// runtime; at most once per process.
    pub fn start(settings: &Settings) -> anyhow::Result<Self> {
        let provider = export::provider(settings)?;
        let _ = ACTIVE.set(Active {
            incoming: settings.incoming,
            propagate: settings.propagate,
            trace_url: settings.trace_url.clone(),
        });
        Ok(Self { provider })
    }

    /// The layer that turns [`TARGET`] spans into OpenTelemetry spans, and the
    /// host's and plugins' log events inside them into span events.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("optech");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                if meta.is_span() {
                    meta.target() == TARGET
                } else {
                    (meta.target() == "plugin" || meta.target().starts_with("optech_host"))
                        && *meta.level() <= tracing::Level::INFO
                }
            }))
    }

    /// Exports what is queued, waiting at most `within`.
    pub async fn shutdown(self, within: Duration) {
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within));
        match tokio::time::timeout(within + Duration::from_millis(500), flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("optech: traces not all exported at shutdown: {e}"),
            _ => eprintln!("optech: traces not all exported within {within:?} of shutdown"),
        }
    }
}

fn propagator() -> &'static TraceContextPropagator {
    static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

/// The caller's trace on an incoming request: the new server `span` joins
/// it, links to it or ignores it, as `incoming_traceparent` says. Call before
/// the span is first entered.
pub fn adopt_incoming(span: &tracing::Span, headers: &http::HeaderMap) {
    let Some(active) = ACTIVE.get() else { return };
    if active.incoming == Incoming::Ignore || !headers.contains_key("traceparent") {
        return;
    }
    let cx = propagator().extract(&opentelemetry_http::HeaderExtractor(headers));
    let remote = cx.span().span_context().clone();
    if !remote.is_valid() {
        return;
    }
    match active.incoming {
        Incoming::Parent => {
            let _ = span.set_parent(cx);
        }
        Incoming::Link => span.add_link(remote),
        Incoming::Ignore => {}
    }
}

/// Writes `span`'s context as `traceparent` (and `tracestate`) into `headers`.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if span.is_none() {
        return;
    }
    let cx = span.context();
    propagator().inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
}

/// A trace context as an outbox record keeps it: `(traceparent, tracestate)`.
pub type Carried = (Option<String>, Option<String>);

/// The trace id in a carried context: `traceparent` is
/// `00-<32 hex trace id>-<16 hex span id>-<flags>`.
pub fn trace_id(carried: &Carried) -> Option<&str> {
    let id = carried.0.as_deref()?.get(3..35)?;
    id.bytes().all(|b| b.is_ascii_hexdigit()).then_some(id)
}

/// `span`'s context as stored with an outbox record.
pub fn carry(span: &tracing::Span) -> Carried {
    if span.is_none() {
        return (None, None);
    }
    let mut carrier = HashMap::new();
    propagator().inject_context(&span.context(), &mut carrier);
    (
        carrier.remove("traceparent"),
        carrier.remove("tracestate").filter(|s| !s.is_empty()),
    )
}

/// Makes `span` a child of a stored context (see [`carry`]); a missing or
/// malformed one leaves it a new trace.
pub fn resume(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    if span.is_none() {
        return;
    }
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_string(), state.to_string());
    }
    let cx = propagator().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The trace and span ids of `span`, as 32 and 16 hex digits.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let context = cx.span().span_context().clone();
    context.is_valid().then(|| {
        (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_id_is_read_from_a_traceparent() {
        let carried = (
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string()),
            None,
        );
        assert_eq!(trace_id(&carried), Some("0af7651916cd43dd8448eb211c80319c"));
        assert_eq!(trace_id(&(Some("00-short".into()), None)), None);
        assert_eq!(trace_id(&(None, None)), None);
    }

    #[test]
    fn without_tracing_nothing_is_carried() {
        // Tracing is never started in unit tests: every helper is a no-op.
        assert!(!enabled());
        let span = tracing::Span::none();
        let mut headers = http::HeaderMap::new();
        inject(&span, &mut headers);
        assert!(headers.is_empty());
        assert_eq!(carry(&span), (None, None));
        assert_eq!(ids(&span), None);
        assert!(trace_url("abc").is_none());
    }
}
