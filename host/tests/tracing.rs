//! OpenTelemetry traces from the real `optech serve`, received by a real OTLP
//! receiver (HTTP and gRPC, decoded with `opentelemetry-proto`):
//! - a sync request whose plugin calls a back end is one trace: the server
//!   span, the handler, its instantiation and call, and the client span, with
//!   the right parents (the server span is `POST /`, the client span its method); the back end got the same trace in `traceparent`; the
//!   caller's own trace is a link (the default) or the parent (when trusted);
//!   errors mark the spans, the plugin's log lines are events of its call,
//!   and the error body and the JSON log carry the ids;
//! - an async request's delivery attempts, one refused and one delivered,
//!   are in the request's trace although the host was killed between them;
//!   on PostgreSQL, also when another replica delivers;
//! - a collector that never answers neither slows nor fails requests, its
//!   dropped spans are counted, and shutdown waits for it only within a bound;
//! - no input, secret, path or query is in any exported byte.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::otlp::{Collector, ReceivedSpan, Transport};
use common::{Backend, Process, Receiver, build_plugins, start_process_env};
use serde_json::{Value, json};

/// Values that must never be exported: an input, a query, a config secret.
const INPUT_SECRET: &str = "input-value-never-exported";
const QUERY_SECRET: &str = "query-value-never-exported";
const CONFIG_SECRET: &str = "config-secret-never-exported";

const WAIT: Duration = Duration::from_secs(20);

/// The environment of a host exporting to `collector`, flushing every 100 ms.
fn otel_env(collector: &Collector) -> Vec<(String, String)> {
    let protocol = match collector.transport() {
        Transport::Http => "http/protobuf",
        Transport::Grpc => "grpc",
    };
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
        ("OTEL_SERVICE_NAME".into(), "optech-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("OPTECH_LOG_FORMAT".into(), "json".into()),
        ("CONFIG_SECRET".into(), CONFIG_SECRET.into()),
    ]
}

fn start(config: &Path, env: &[(String, String)]) -> Process {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start_process_env(config, "info", &env)
}

fn sync_config(dir: &Path, back_end: &Receiver, telemetry: &str) -> std::path::PathBuf {
    common::process_config(
        dir,
        &format!(
            "[keys]\nfetch = \"tk\"\nfail = \"tk\"\nlog = \"tk\"\n\
             [plugins.tk]\nsource = \"testkit.wasm\"\nallowed_hosts = [{:?}]\n\
             [plugins.tk.config]\ntoken = {{ env = \"CONFIG_SECRET\" }}\n{telemetry}",
            back_end.base
        ),
    )
}

async fn post(host: &Process, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let body = body.to_string();
    let signature =
        optech_host::signature::Signer::new(common::SECRET.as_bytes(), None).sign(body.as_bytes());
    let mut request = reqwest::Client::new()
        .post(&host.url)
        .header("content-type", "application/json")
        .header("x-optech-signature", signature);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body).send().await.expect("request failed");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("reading the answer");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str, trace: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name && s.trace_id == trace)
        .collect();
    assert_eq!(found.len(), 1, "{name} spans in trace {trace}: {found:#?}");
    found[0]
}

fn assert_child(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.trace_id, parent.trace_id,
        "{} is not in {}'s trace",
        child.name, parent.name
    );
    assert_eq!(
        child.parent_span_id.as_deref(),
        Some(parent.span_id.as_str()),
        "{}'s parent is not {}",
        child.name,
        parent.name
    );
}

fn assert_nothing_secret(collector: &Collector) {
    let raw = collector.raw();
    assert!(!raw.is_empty(), "nothing was exported");
    for secret in [INPUT_SECRET, QUERY_SECRET, CONFIG_SECRET, "/private/path"] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} was exported"
        );
    }
}

async fn one_trace_per_sync_request(transport: Transport) {
    build_plugins().as_ref().unwrap();
    let collector = Collector::start(transport).await;
    let back_end = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        &sync_config(dir.path(), &back_end, ""),
        &otel_env(&collector),
    );

    // The caller's own trace, which the host records as a link (the default).
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{caller_trace}-{caller_span}-01");
    let url = format!("{}/private/path?q={QUERY_SECRET}", back_end.base);
    let (status, body) = post(
        &host,
        json!({"key": "fetch", "inputs": {"url": url, "note": INPUT_SECRET}}),
        &[
            ("traceparent", &traceparent),
            ("x-request-id", "trace-test-1"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let spans = collector
        .wait_for("the sync request's five spans", WAIT, |spans| {
            ["POST /", "handler", "instantiate", "handle", "GET"]
                .iter()
                .all(|name| spans.iter().any(|s| s.name == *name))
        })
        .await;
    let server = named(&spans, "POST /")[0];
    let trace = server.trace_id.clone();
    assert_ne!(
        trace, caller_trace,
        "an untrusted caller chose the trace id"
    );
    assert_eq!(
        server.links,
        [(caller_trace.to_string(), caller_span.to_string())],
        "the caller's trace is a link"
    );
    assert_eq!(server.parent_span_id, None);
    assert_eq!(server.kind, "server");
    for (key, value) in [
        ("http.request.method", "POST"),
        ("http.response.status_code", "200"),
        ("optech.key", "fetch"),
        ("optech.plugin", "tk"),
        ("optech.mode", "sync"),
        ("optech.request_id", "trace-test-1"),
    ] {
        assert_eq!(server.attr(key), Some(value), "{key} of {server:#?}");
    }
    assert_eq!(
        server.resource.get("service.name").map(String::as_str),
        Some("optech-test")
    );

    let handler = one(&spans, "handler", &trace);
    assert_child(handler, server);
    assert_child(one(&spans, "instantiate", &trace), handler);
    let call = one(&spans, "handle", &trace);
    assert_child(call, handler);
    let outbound = one(&spans, "GET", &trace);
    assert_child(outbound, call);
    assert_eq!(outbound.kind, "client");
    let port = back_end.base.rsplit(':').next().unwrap();
    for (key, value) in [
        ("http.request.method", "GET"),
        ("server.address", "127.0.0.1"),
        ("server.port", port),
        ("http.response.status_code", "200"),
        ("http.response.body.size", "0"),
        ("optech.egress.decision", "allowed"),
    ] {
        assert_eq!(outbound.attr(key), Some(value), "{key} of {outbound:#?}");
    }

    // The back end's request carried the client span's context.
    let got = back_end.deliveries.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let sent = got[0].headers["traceparent"].to_str().unwrap().to_string();
    assert_eq!(sent, format!("00-{trace}-{}-01", outbound.span_id));

    // An unsigned request: anyone can send those, so none is traced (the
    // console keeps none either) and its error body names no trace.
    let unsigned = reqwest::Client::new()
        .post(&host.url)
        .header("content-type", "application/json")
        .header("x-optech-signature", "0".repeat(64))
        .header("x-request-id", "unsigned-1")
        .body(json!({"key": "fetch", "inputs": {}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let body: Value = serde_json::from_slice(&unsigned.bytes().await.unwrap()).unwrap();
    assert!(body["error"].get("trace_id").is_none(), "{body}");

    // A failing plugin: the error body names the trace, the spans say error.
    let (status, body) = post(&host, json!({"key": "fail", "inputs": {}}), &[]).await;
    assert_eq!(status, 500, "{body}");
    let failed_trace = body["error"]["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no trace_id in {body}"))
        .to_string();
    assert_eq!(failed_trace.len(), 32);
    let spans = collector
        .wait_for("the failed request's spans", WAIT, |spans| {
            spans
                .iter()
                .any(|s| s.name == "handler" && s.trace_id == failed_trace)
        })
        .await;
    let server = one(&spans, "POST /", &failed_trace);
    assert_eq!(server.status, "error");
    // Exported after the unsigned request's span would have been.
    assert!(
        !spans
            .iter()
            .any(|s| s.attr("optech.request_id") == Some("unsigned-1")),
        "an unsigned request was traced"
    );
    assert_eq!(server.attr("error.type"), Some("plugin_error"));
    assert_eq!(one(&spans, "handler", &failed_trace).status, "error");

    // A plugin's log lines are events of its call.
    let (status, _) = post(&host, json!({"key": "log", "inputs": {"lines": "2"}}), &[]).await;
    assert_eq!(status, 200);
    let spans = collector
        .wait_for("the logging call", WAIT, |spans| {
            spans
                .iter()
                .any(|s| s.name == "handle" && s.events.iter().any(|(m, _)| m == "log line 1"))
        })
        .await;
    let logged = spans
        .iter()
        .find(|s| s.name == "handle" && s.events.iter().any(|(m, _)| m == "log line 1"))
        .unwrap();
    let events: Vec<&str> = logged.events.iter().map(|(m, _)| m.as_str()).collect();
    // Its stdout and stderr lines too, in the order written.
    assert_eq!(
        events,
        [
            "log line 0",
            "stdout line 0",
            "stderr line 0",
            "log line 1",
            "stdout line 1",
            "stderr line 1"
        ]
    );

    // The JSON log's lines carry the ids of the span they were written in.
    common::wait_until("a log line with the trace id", WAIT, || async {
        host.lines.lock().unwrap().iter().any(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|v| {
                v["trace_id"] == failed_trace.as_str()
                    && v["span_id"].as_str().is_some_and(|s| s.len() == 16)
            })
        })
    })
    .await;
    assert_nothing_secret(&collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_request_is_one_trace_over_http() {
    one_trace_per_sync_request(Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_request_is_one_trace_over_grpc() {
    one_trace_per_sync_request(Transport::Grpc).await;
}

/// `[telemetry]` alone (no `OTEL_*` variables) turns tracing on, and a
/// trusted caller's trace is continued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_alone_turns_tracing_on_and_may_trust_the_callers_trace() {
    build_plugins().as_ref().unwrap();
    let collector = Collector::start(Transport::Grpc).await;
    let back_end = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let telemetry = format!(
        "[telemetry]\nendpoint = {:?}\nprotocol = \"grpc\"\nservice_name = \"from-file\"\n\
         incoming_traceparent = \"parent\"\nresource_attributes = {{ \"deployment.environment\" = \"test\" }}\n\
         trace_url = \"http://jaeger.example/trace/{{trace_id}}\"\n",
        collector.endpoint()
    );
    let config = sync_config(dir.path(), &back_end, &telemetry);
    let host = start(
        &config,
        &[
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ("CONFIG_SECRET".into(), CONFIG_SECRET.into()),
        ],
    );
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let url = format!("{}/x", back_end.base);
    let (status, _) = post(
        &host,
        json!({"key": "fetch", "inputs": {"url": url}}),
        &[
            (
                "traceparent",
                &format!("00-{caller_trace}-{caller_span}-01"),
            ),
            ("x-request-id", "file-trace-1"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    // The console's page of the request: its waterfall, and a link to its trace.
    let admin = host.admin.clone().unwrap();
    let get = |url: String| async move { reqwest::get(url).await.unwrap().text().await.unwrap() };
    let rows = get(format!("{admin}/requests/rows?id=file-trace-1")).await;
    let href = rows
        .split("href=\"/requests/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no row in {rows}"))
        .to_string();
    let page = get(format!("{admin}/requests/{href}")).await;
    assert!(
        page.contains(&format!(
            "href=\"http://jaeger.example/trace/{caller_trace}\""
        )),
        "no link to the trace in {page}"
    );
    let port = back_end.base.rsplit(':').next().unwrap();
    assert!(
        page.contains(&format!("GET 127.0.0.1:{port}")),
        "no outbound call in {page}"
    );
    let spans = collector
        .wait_for("the server span", WAIT, |spans| {
            spans.iter().any(|s| s.name == "POST /")
        })
        .await;
    let server = named(&spans, "POST /")[0];
    assert_eq!(
        server.trace_id, caller_trace,
        "the trusted caller's trace is continued"
    );
    assert_eq!(server.parent_span_id.as_deref(), Some(caller_span));
    assert_eq!(server.resource["service.name"], "from-file");
    assert_eq!(server.resource["deployment.environment"], "test");
}

fn async_config(dir: &Path, server: &str) -> std::path::PathBuf {
    common::process_config(
        dir,
        &format!(
            "shutdown_grace = \"1s\"\n{server}[keys]\nsleep = \"tk\"\n\
             [plugins.tk]\nsource = \"testkit.wasm\"\nmode = \"async\"\n"
        ),
    )
}

/// A port with nothing listening on it (yet): a link there is refused.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The attempts of one trace's deliveries, with the process that made each
/// (its `service.instance.id`).
fn attempts<'a>(spans: &'a [ReceivedSpan], trace: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name == "delivery attempt" && s.trace_id == trace)
        .collect()
}

/// Sends one async request whose link refuses, waits until a refused attempt
/// is exported, kills the host, and returns the request's trace id.
async fn accept_then_kill(host: &mut Process, collector: &Collector, link: &str) -> String {
    let (status, body) = post(
        host,
        json!({"link": link, "key": "sleep", "inputs": {"ms": "10", "note": INPUT_SECRET}}),
        &[],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let spans = collector
        .wait_for("a refused delivery attempt", WAIT, |spans| {
            spans.iter().any(|s| {
                s.name == "delivery attempt" && s.attr("optech.delivery.outcome") == Some("retry")
            })
        })
        .await;
    host.child.kill().unwrap(); // SIGKILL: nothing is flushed.
    host.child.wait().unwrap();
    let refused = spans.iter().find(|s| s.name == "delivery attempt").unwrap();
    assert_eq!(refused.status, "error");
    assert!(
        refused.attr("optech.delivery.retry_in_ms").is_some(),
        "{refused:#?}"
    );
    let trace = refused.trace_id.clone();
    let server = one(&spans, "POST /", &trace);
    assert_eq!(server.attr("http.response.status_code"), Some("202"));
    assert_eq!(server.attr("optech.mode"), Some("async"));
    assert_child(one(&spans, "outbox record", &trace), server);
    let work = one(&spans, "async work", &trace);
    assert_child(work, server);
    assert_child(one(&spans, "handler", &trace), work);
    trace
}

/// After the restart (or on the replica that took over): the delivered
/// attempt is in the same trace, under a delivery span whose parent is the
/// request's server span, made by another process.
async fn assert_delivered_in(collector: &Collector, trace: &str) {
    let spans = collector
        .wait_for("the delivered attempt", WAIT, |spans| {
            spans.iter().any(|s| {
                s.name == "delivery attempt"
                    && s.trace_id == trace
                    && s.attr("optech.delivery.outcome") == Some("delivered")
            })
        })
        .await;
    let all = attempts(&spans, trace);
    let delivered: Vec<_> = all
        .iter()
        .filter(|s| s.attr("optech.delivery.outcome") == Some("delivered"))
        .collect();
    assert_eq!(delivered.len(), 1, "{all:#?}");
    let delivered = delivered[0];
    assert_eq!(delivered.attr("http.response.status_code"), Some("200"));
    let server = one(&spans, "POST /", trace);
    let delivery = spans
        .iter()
        .find(|s| Some(&s.span_id) == delivered.parent_span_id.as_ref())
        .expect("the delivered attempt's delivery span was exported");
    assert_eq!(delivery.name, "delivery");
    assert_child(delivery, server);
    let instances: BTreeSet<&str> = all
        .iter()
        .map(|s| s.resource["service.instance.id"].as_str())
        .collect();
    assert_eq!(
        instances.len(),
        2,
        "one process refused, another delivered: {all:#?}"
    );
    assert_nothing_secret(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_answers_attempts_join_its_trace_across_a_restart() {
    build_plugins().as_ref().unwrap();
    let collector = Collector::start(Transport::Http).await;
    let dir = tempfile::tempdir().unwrap();
    let config = async_config(dir.path(), "");
    let env = otel_env(&collector);
    let port = free_port();
    let link = format!("http://127.0.0.1:{port}/ingest/traced");

    let mut first = start(&config, &env);
    let trace = accept_then_kill(&mut first, &collector, &link).await;

    let receiver = Receiver::start_on(port).await;
    let _second = start(&config, &env);
    receiver.wait_for(1, WAIT).await;
    assert_delivered_in(&collector, &trace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_delivers_in_the_same_trace() {
    let Some(Backend::Postgres(url)) = Backend::postgres().await else {
        return;
    };
    build_plugins().as_ref().unwrap();
    let collector = Collector::start(Transport::Grpc).await;
    let work = tempfile::tempdir().unwrap();
    let server = format!("outbox = {url:?}\noutbox_lease = \"2s\"\n");
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let env = otel_env(&collector);
    let port = free_port();
    let link = format!("http://127.0.0.1:{port}/ingest/replica");

    let mut first = start(&async_config(&a, &server), &env);
    let _second = start(&async_config(&b, &server), &env);
    let trace = accept_then_kill(&mut first, &collector, &link).await;
    // The second replica takes the claim over once its lease runs out.
    let receiver = Receiver::start_on(port).await;
    receiver.wait_for(1, WAIT).await;
    assert_delivered_in(&collector, &trace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_collector_neither_slows_nor_fails_requests() {
    build_plugins().as_ref().unwrap();
    for transport in [Transport::Http, Transport::Grpc] {
        let collector = Collector::start_hung(transport).await;
        let dir = tempfile::tempdir().unwrap();
        let config = common::process_config(
            dir.path(),
            "[keys]\necho = \"tk\"\n[plugins.tk]\nsource = \"testkit.wasm\"\n\
             [telemetry]\nmax_queue_size = 16\nexport_timeout = \"30s\"\n",
        );
        let mut host = start(&config, &otel_env(&collector));
        let admin = host.admin.clone().unwrap();
        // 4 spans a request: 200 requests fill a queue of 16 many times over.
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..200 {
            let sent = Instant::now();
            let (status, body) = post(
                &host,
                json!({"key": "echo", "inputs": {"i": i.to_string()}}),
                &[],
            )
            .await;
            assert_eq!(status, 200, "{body}");
            slowest = slowest.max(sent.elapsed());
        }
        eprintln!(
            "{transport:?}: 200 requests in {:?}, the slowest {slowest:?}, with a collector that never answers",
            started.elapsed()
        );
        // An export blocks for 30 s; a request waiting on it would take that long.
        assert!(
            slowest < Duration::from_secs(5),
            "a request took {slowest:?}"
        );
        common::wait_until("the collector got an export", WAIT, || async {
            collector.requests() >= 1
        })
        .await;
        let scrape = common::scrape(&admin).await;
        let dropped = common::value(
            &scrape,
            "optech_trace_spans_dropped_total",
            &[("reason", "queue_full")],
        );
        assert!(dropped >= 500.0, "only {dropped} spans counted as dropped");
        assert_eq!(
            common::value(&scrape, "optech_trace_spans_exported_total", &[]),
            0.0
        );
        // Shutdown tries to flush, within its bound (5 s), not the export's 30 s.
        let stopping = Instant::now();
        std::process::Command::new("kill")
            .args(["-TERM", &host.child.id().to_string()])
            .status()
            .unwrap();
        let status = host.child.wait().unwrap();
        let took = stopping.elapsed();
        eprintln!("{transport:?}: shut down in {took:?} with the collector hung");
        assert!(status.success(), "{status:?}");
        assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    }
}
