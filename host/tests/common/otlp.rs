//! A real OpenTelemetry trace receiver for the tracing tests: OTLP/HTTP
//! (protobuf, `POST /v1/traces`) or OTLP/gRPC (`TraceService/Export`) on
//! 127.0.0.1 with an ephemeral port, decoding with `opentelemetry-proto`'s
//! types. The host under test exports its spans to [`Collector::endpoint`].
//!
//! Its own accept loop rather than `axum::serve` or tonic's `Server`: both
//! spawn every connection as a detached task, which would go on answering
//! the host's pooled connections after the collector is dropped. Here the
//! accept loop, every connection and every HTTP/2 stream run in one
//! `JoinSet`, so dropping the [`Collector`] closes the listener and every
//! connection to it at once (an exporter then sees its collector gone).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Which OTLP protocol the receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/HTTP with protobuf bodies, `POST /v1/traces` (HTTP/1.1, or
    /// HTTP/2 with prior knowledge).
    Http,
    /// OTLP/gRPC, `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
    Grpc,
}

/// One span as received, flattened out of its request.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Lowercase hex, 32 characters.
    pub trace_id: String,
    /// Lowercase hex, 16 characters.
    pub span_id: String,
    /// `None` when the span has no parent (empty in the protobuf).
    pub parent_span_id: Option<String>,
    pub name: String,
    /// "server", "client", "internal", "producer", "consumer" or "unspecified".
    pub kind: &'static str,
    /// Values stringified (see [`stringify`]).
    pub attributes: BTreeMap<String, String>,
    /// Each event's name and attributes, in order.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// Each link's (trace id, span id), in hex.
    pub links: Vec<(String, String)>,
    /// "unset", "ok" or "error".
    pub status: &'static str,
    pub status_message: String,
    /// The attributes of the resource the span came under (`service.name`…).
    pub resource: BTreeMap<String, String>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
}

impl ReceivedSpan {
    /// One attribute's value, stringified.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running receiver; its tasks and connections end when it is dropped.
pub struct Collector {
    transport: Transport,
    port: u16,
    shared: Arc<Shared>,
    tasks: Tasks,
}

impl Collector {
    /// A receiver that records every span it gets.
    pub async fn start(transport: Transport) -> Collector {
        Self::launch(transport, false).await
    }

    /// A receiver that accepts connections and requests and never answers
    /// (a hung collector): it only counts the requests it receives.
    pub async fn start_hung(transport: Transport) -> Collector {
        Self::launch(transport, true).await
    }

    async fn launch(transport: Transport, hung: bool) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the OTLP receiver on 127.0.0.1");
        let port = listener
            .local_addr()
            .expect("the receiver's address")
            .port();
        let shared = Arc::new(Shared {
            hung,
            requests: AtomicUsize::new(0),
            received: Mutex::new(Received::default()),
        });
        let tasks = Tasks(Arc::new(Mutex::new(Some(JoinSet::new()))));
        let serve: Serve = match transport {
            Transport::Http => {
                let router = Router::new()
                    .route("/v1/traces", post(http_export))
                    .layer(DefaultBodyLimit::disable())
                    .with_state(shared.clone());
                let service = TowerToHyperService::new(router);
                Box::new(move |stream, tasks| {
                    let service = service.clone();
                    Box::pin(async move {
                        // HTTP/1.1, or HTTP/2 when the client opens with its preface.
                        let builder = auto::Builder::new(tasks);
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    })
                })
            }
            Transport::Grpc => {
                let service = TowerToHyperService::new(TraceServiceServer::new(GrpcReceiver {
                    shared: shared.clone(),
                }));
                Box::new(move |stream, tasks| {
                    let service = service.clone();
                    Box::pin(async move {
                        let builder = auto::Builder::new(tasks).http2_only();
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    })
                })
            }
        };
        tasks.spawn(accept(listener, tasks.clone(), serve));
        Collector {
            transport,
            port,
            shared,
            tasks,
        }
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// What to put in `OTEL_EXPORTER_OTLP_ENDPOINT`: `http://127.0.0.1:PORT`
    /// (over HTTP the exporter appends `/v1/traces` itself).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far, flattened, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.received().spans.clone()
    }

    /// Waits (polling every 50 ms, up to `limit`) until `done(&spans)` holds,
    /// and returns the spans; panics, listing the names of the spans
    /// received, if it never does.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + limit;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() >= deadline {
                let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
                panic!(
                    "waited {limit:?} for {what} on the OTLP/{:?} receiver: {} spans in {} \
                     export requests: {names:?}",
                    self.transport,
                    spans.len(),
                    self.requests(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every export request's protobuf encoding, concatenated (over gRPC,
    /// the decoded message encoded again), to search for values that must
    /// never be exported.
    pub fn raw(&self) -> Vec<u8> {
        self.shared.received().raw.clone()
    }

    /// Export requests received (the hung receiver counts them too).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

struct Shared {
    hung: bool,
    requests: AtomicUsize,
    received: Mutex<Received>,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    raw: Vec<u8>,
}

impl Shared {
    fn received(&self) -> MutexGuard<'_, Received> {
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, encoded: &[u8], request: &ExportTraceServiceRequest) {
        let mut received = self.received();
        received.raw.extend_from_slice(encoded);
        for resource_spans in &request.resource_spans {
            let resource = resource_attributes(resource_spans);
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    received.spans.push(flatten(span, &resource));
                }
            }
        }
    }
}

/// Every task of one collector: the accept loop, each connection, each
/// HTTP/2 stream (as hyper's executor). Aborted all at once.
#[derive(Clone)]
struct Tasks(Arc<Mutex<Option<JoinSet<()>>>>);

impl Tasks {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(set) = set.as_mut() {
            // Forget the tasks that have ended (closed connections).
            while set.try_join_next().is_some() {}
            set.spawn(task);
        }
    }

    fn abort_all(&self) {
        let set = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        // Dropping the set aborts every task in it (outside the lock).
        drop(set);
    }
}

impl<F> hyper::rt::Executor<F> for Tasks
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        self.spawn(task);
    }
}

/// Serves one accepted connection, spawning its streams into the tasks.
type Serve = Box<dyn Fn(TcpStream, Tasks) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

async fn accept(listener: TcpListener, tasks: Tasks, serve: Serve) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tasks.spawn(serve(stream, tasks.clone()));
            }
            // Out of file descriptors and the like: try again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn http_export(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if shared.hung {
        std::future::pending::<()>().await;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.is_empty() && !content_type.starts_with("application/x-protobuf") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("this receiver decodes application/x-protobuf only, not {content_type}"),
        )
            .into_response();
    }
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && encoding.as_bytes() != b"identity"
    {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("this receiver does not decompress {encoding:?}"),
        )
            .into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body.as_ref()) {
        Ok(request) => request,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an ExportTraceServiceRequest: {e}"),
            )
                .into_response();
        }
    };
    shared.record(&body, &request);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

struct GrpcReceiver {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.shared.requests.fetch_add(1, Ordering::SeqCst);
        if self.shared.hung {
            std::future::pending::<()>().await;
        }
        let request = request.into_inner();
        self.shared.record(&request.encode_to_vec(), &request);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn resource_attributes(resource_spans: &ResourceSpans) -> BTreeMap<String, String> {
    resource_spans
        .resource
        .as_ref()
        .map(|resource| attributes(&resource.attributes))
        .unwrap_or_default()
}

fn flatten(span: &Span, resource: &BTreeMap<String, String>) -> ReceivedSpan {
    let kind = match SpanKind::try_from(span.kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Unspecified) | Err(_) => "unspecified",
    };
    let (status, status_message) = match &span.status {
        None => ("unset", String::new()),
        Some(status) => (
            match SpanStatusCode::try_from(status.code) {
                Ok(SpanStatusCode::Ok) => "ok",
                Ok(SpanStatusCode::Error) => "error",
                Ok(SpanStatusCode::Unset) | Err(_) => "unset",
            },
            status.message.clone(),
        ),
    };
    ReceivedSpan {
        trace_id: hex::encode(&span.trace_id),
        span_id: hex::encode(&span.span_id),
        parent_span_id: (!span.parent_span_id.is_empty())
            .then(|| hex::encode(&span.parent_span_id)),
        name: span.name.clone(),
        kind,
        attributes: attributes(&span.attributes),
        events: span
            .events
            .iter()
            .map(|event| (event.name.clone(), attributes(&event.attributes)))
            .collect(),
        links: span
            .links
            .iter()
            .map(|link| (hex::encode(&link.trace_id), hex::encode(&link.span_id)))
            .collect(),
        status,
        status_message,
        resource: resource.clone(),
        start_unix_nanos: span.start_time_unix_nano,
        end_unix_nanos: span.end_time_unix_nano,
    }
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(stringify).unwrap_or_default(),
            )
        })
        .collect()
}

/// An attribute value as a string: strings as they are; integers, doubles
/// and booleans through `to_string`; bytes in hex; arrays as `[a, b]`;
/// key-value lists as `{k: v, …}`; a missing value as "".
pub fn stringify(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(bytes)) => hex::encode(bytes),
        Some(Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(stringify).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(list)) => {
            let items: Vec<String> = list
                .values
                .iter()
                .map(|kv| {
                    format!(
                        "{}: {}",
                        kv.key,
                        kv.value.as_ref().map(stringify).unwrap_or_default()
                    )
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Some(Value::StringValueStrindex(index)) => format!("strindex:{index}"),
    }
}
