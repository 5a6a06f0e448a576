//! The traced contenders' collector: an OTLP/HTTP receiver on loopback that
//! decodes every export (as a real collector must) and counts the spans, so
//! the run checks that each traced request's spans arrived, not only how fast
//! it went.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;

pub struct Collector {
    pub endpoint: String,
    spans: Arc<AtomicU64>,
}

impl Collector {
    /// Starts on a free loopback port, on one thread of its own.
    pub fn start() -> anyhow::Result<Self> {
        let spans = Arc::new(AtomicU64::new(0));
        let app = axum::Router::new()
            .route("/v1/traces", post(export))
            .with_state(spans.clone());
        let addr = crate::backend::serve_on_own_thread("bench-collector", app)?;
        Ok(Self {
            endpoint: format!("http://{addr}"),
            spans,
        })
    }

    /// Spans received since the start.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

async fn export(State(spans): State<Arc<AtomicU64>>, body: Bytes) -> Response {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let n: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    spans.fetch_add(n as u64, Ordering::Relaxed);
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}
