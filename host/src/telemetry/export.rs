//! How finished spans leave the host: OpenTelemetry's batch processor on its
//! own thread, behind a gate that bounds what waits and counts what is
//! dropped, and an OTLP exporter (HTTP through our reqwest client, or gRPC).
//!
//! Invariant: a request never waits on the collector. Ending a span is a
//! counter check and a `try_send`; a full queue drops the span and counts it
//! (`optech_trace_spans_dropped_total{reason="queue_full"}`); an export that
//! fails or outlasts `export_timeout` drops its batch and counts it
//! (`reason="export_failed"`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{
    RetryPolicy, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};

use super::counts::COUNTS;
use super::settings::Settings;
use crate::config::{Protocol, SamplerKind};

/// The largest collector answer read: it only says how many spans it refused.
const MAX_RESPONSE: usize = 64 * 1024;

/// Builds the tracer provider `settings` describe. Must run inside the tokio
/// runtime: the HTTP client and the gRPC channel spawn their work on it.
pub fn provider(settings: &Settings) -> anyhow::Result<SdkTracerProvider> {
    let exporter = exporter(settings)?;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let counted = Counted {
        inner: exporter,
        in_flight: in_flight.clone(),
    };
    // OTEL_BSP_SCHEDULE_DELAY and OTEL_BSP_MAX_EXPORT_BATCH_SIZE still apply
    // (read by `default()`); the queue's size is ours, so the gate matches it.
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(settings.max_queue_size)
        .build();
    let processor = Gate {
        inner: BatchSpanProcessor::builder(counted)
            .with_batch_config(batch)
            .build(),
        in_flight,
        cap: settings.max_queue_size,
    };
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(settings))
        .with_resource(resource(settings))
        .build())
}

fn exporter(settings: &Settings) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let endpoint = settings.endpoint.0.clone();
    let timeout = settings.export_timeout;
    let builder = opentelemetry_otlp::SpanExporter::builder();
    // No retries inside an export: a hung collector then holds the export
    // thread for one timeout, not four; the next batch is the retry.
    let exporter = match settings.protocol.0 {
        Protocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .with_headers(settings.headers.clone().into_iter().collect())
            .with_retry_policy(RetryPolicy::disabled())
            .with_http_client(Client::new(timeout)?)
            .build()?,
        Protocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (name, value) in &settings.headers {
                let name = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
                    .map_err(|_| anyhow::anyhow!("header {name:?} is not a gRPC metadata name"))?;
                let value = value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("the value of header {name:?} is not usable"))?;
                metadata.insert(name, value);
            }
            builder
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .with_metadata(metadata)
                .with_retry_policy(RetryPolicy::disabled())
                .build()?
        }
    };
    Ok(exporter)
}

fn sampler(settings: &Settings) -> Sampler {
    let ratio = settings.ratio;
    match settings.sampler.0 {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentBasedTraceIdRatio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

fn resource(settings: &Settings) -> Resource {
    let mut attributes: Vec<KeyValue> = settings
        .resource_attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    if !settings.resource_attributes.contains_key("service.version") {
        attributes.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    // Tells replicas apart: which one ran a request, which one delivered it.
    if !settings
        .resource_attributes
        .contains_key("service.instance.id")
    {
        let instance = format!("{:032x}", rand::random::<u128>());
        attributes.push(KeyValue::new("service.instance.id", instance));
    }
    Resource::builder_empty()
        .with_service_name(settings.service_name.0.clone())
        .with_attributes(attributes)
        .build()
}

/// The exporter's HTTP client: our reqwest, driven on the runtime the host
/// runs on. The batch processor calls it from its own thread, which has no
/// runtime; the request is spawned onto the saved handle and awaited there.
#[derive(Debug)]
struct Client {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl Client {
    fn new(timeout: Duration) -> anyhow::Result<Self> {
        // Not the plugins' egress client: the collector is the operator's, often on
        // loopback, where the plugins' guard refuses to go.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("optech/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            runtime: tokio::runtime::Handle::try_current()?,
            timeout,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let (client, timeout) = (self.client.clone(), self.timeout);
        let sent = self.runtime.spawn(async move {
            tokio::time::timeout(timeout, async move {
                let response = client.execute(request).await?;
                let mut builder = http::Response::builder().status(response.status());
                for (name, value) in response.headers() {
                    builder = builder.header(name, value);
                }
                let mut response = response;
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    if body.len() + chunk.len() > MAX_RESPONSE {
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok::<_, HttpError>(builder.body(Bytes::from(body))?)
            })
            .await
        });
        match sent.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_elapsed)) => Err(format!("no answer within {timeout:?}").into()),
            Err(join) => Err(Box::new(join)),
        }
    }
}

/// The exporter, counting what it sends and what it loses.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    /// Spans handed to the processor and not yet taken by an export.
    in_flight: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => COUNTS.exported.inc_by(n as u64),
            Err(_) => COUNTS.export_failed.inc_by(n as u64),
        };
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Admits a finished span to the batch processor only while fewer than `cap`
/// wait, so the processor's own queue (of the same size) never overflows
/// uncounted: every span refused here is counted. The span of a request
/// whose signature was not verified is never exported (`spans::unsigned`).
#[derive(Debug)]
struct Gate {
    inner: BatchSpanProcessor,
    in_flight: Arc<AtomicUsize>,
    cap: usize,
}

impl SpanProcessor for Gate {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let unsigned = span.attributes.iter().any(|kv| {
            kv.key.as_str() == super::spans::UNSIGNED
                && kv.value == opentelemetry::Value::Bool(true)
        });
        if unsigned {
            return;
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            COUNTS.queue_full.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
